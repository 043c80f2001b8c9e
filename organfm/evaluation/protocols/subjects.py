"""Subject-level evaluation of an organ-set encoder (Pan-FM, P4 and P6).

- linear-probe AUROC per disease on frozen subject embeddings ([CLS] over all available organs);
- robustness curves: AUROC as k organs are dropped from every test subject at test time, the most important
  organ first (``dominant``), at random (``random``), or following the data's missing-not-at-random pattern
  (``mnar``: an organ is dropped with probability proportional to how often it is missing, in the training
  set, among subjects with the same first label);
- the leave-one-organ-out drop in AUROC (per-organ contribution) and the encoder's organ-attention entropy.

The probe is fitted once, on training subjects with their own organs, and applied to every dropped test set,
as a deployed model meets subjects with fewer organs than it was fitted on. ``organfm evaluate`` runs it as
protocol ``subjects``: subjects from ``data.source`` (``synthetic``, or a subject manifest CSV with a ``split``
column, relative to ``data.root``), settings in ``subjects.*`` (``configs/tasks/panfm_synthetic.yaml``).

The subjects are prepared as the model was trained, from its export's data contract: the organ image size and
dimensionality (``input_size``), the intensity mode and window of manifest images (``intensity``) and the
normalisation (``mean``/``std``). Synthetic evaluation subjects come from the pretraining generator's world
(the same ``seed``) at indices past those pretraining drew (``index_offset``); an overlap is refused.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from organfm.evaluation.protocol import ModelRun, make_row, register_protocol
from organfm.evaluation.task_data import TaskDataConfig
from organfm.synthesis.subjects import WORLD
from organfm.views.organ_masking import organ_entropy, organ_saliency

__all__ = ["SubjectSet", "SubjectsConfig", "drop_organs", "embed_subjects", "evaluate_subjects", "load_subject_sets",
           "probe_auroc", "subject_geometry", "subjects"]

DROPS = ("dominant", "random", "mnar")


@dataclass
class SubjectSet:
    """Subjects in memory: ``images`` (N, O, 1, *S) in [0, 1], ``available`` (N, O) bool, ``labels`` (N, D)."""

    images: torch.Tensor
    available: torch.Tensor
    labels: np.ndarray
    organs: list[str]

    @classmethod
    def from_dataset(cls, dataset: Any, indices: range | list[int] | None = None) -> SubjectSet:
        items = [dataset[i] for i in (indices if indices is not None else range(len(dataset)))]
        return cls(torch.stack([it["images"] for it in items]), torch.stack([it["available"] for it in items]),
                   torch.stack([it["labels"] for it in items]).numpy(), list(dataset.organs))


@torch.no_grad()
def embed_subjects(backbone: torch.nn.Module, images: torch.Tensor, available: torch.Tensor, *, mean: float = 0.5,
                   std: float = 0.5, batch_size: int = 128, device: str = "cpu",
                   with_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[CLS] embeddings (N, E) of subjects seen with organs ``available``; optionally organ saliency (N, O).

    Args:
        backbone: an organ-set encoder (``forward_features(x, available)``).
        images: (N, O, 1, *S) in [0, 1].
        available: (N, O) bool; organs outside it are not seen.
        mean, std: the model's input normalisation.
    """
    backbone = backbone.eval().to(device)
    feats, sal = [], []
    for start in range(0, len(images), batch_size):
        x = ((images[start:start + batch_size] - mean) / std).to(device)
        a = available[start:start + batch_size].to(device)
        out = backbone.forward_features(x, a)
        feats.append(out["cls"].float().cpu())
        if with_attention:
            sal.append(organ_saliency(out["cls_attention"], a, backbone.tokens_per_organ).float().cpu())
    return torch.cat(feats), (torch.cat(sal) if with_attention else None)


def probe_auroc(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                c: float = 1.0, models: list | None = None) -> np.ndarray:
    """Per-disease AUROC (D,) of standardised logistic-regression probes (NaN where a split has one class).

    ``models`` (fitted earlier by a call with ``train_x``) are reused when given; a new list is filled otherwise.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = np.full(test_y.shape[1], np.nan)
    fit = models is None or not models
    models = models if models is not None else []
    for d in range(test_y.shape[1]):
        if fit:
            if len(np.unique(train_y[:, d])) < 2:
                models.append(None)
                continue
            models.append(make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(
                train_x, train_y[:, d]))
        if models[d] is not None and len(np.unique(test_y[:, d])) == 2:
            out[d] = roc_auc_score(test_y[:, d], models[d].predict_proba(test_x)[:, 1])
    return out


def drop_organs(available: torch.Tensor, k: int, *, order: list[int] | None = None,
                weights: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Remove up to k available organs per subject, always keeping one.

    Args:
        available: (N, O) bool.
        k: organs to drop per subject.
        order: drop in this organ order (the first k of it that a subject has); else sample.
        weights: (N, O) sampling weights (``mnar``); None: uniform (``random``).

    Returns:
        (N, O) bool, a subset of ``available``.
    """
    n, o = available.shape
    if order is not None:
        rank = torch.empty(o, dtype=torch.long)
        rank[torch.tensor(order)] = torch.arange(o)
        scores = -rank.float().expand(n, o).clone()
    else:
        w = torch.ones(n, o) if weights is None else weights.clamp(min=1e-6)
        gumbel = -torch.log(-torch.log(torch.rand(n, o, generator=generator).clamp(1e-12, 1 - 1e-7)))
        scores = torch.log(w) + gumbel
    scores = scores.masked_fill(~available, -float("inf"))
    pick = scores.argsort(-1, descending=True).argsort(-1)
    num = (available.sum(-1) - 1).clamp(min=0).clamp(max=k)
    return available & ~(pick < num[:, None])


def evaluate_subjects(backbone: torch.nn.Module, train: SubjectSet, test: SubjectSet, *, mean: float = 0.5,
                      std: float = 0.5, dominant: int | None = None, drops: tuple[str, ...] = DROPS,
                      repeats: int = 3, seed: int = 0, c: float = 1.0, device: str = "cpu") -> dict[str, Any]:
    """AUROC with all organs, leave-one-organ-out drops, robustness curves, attention entropy and saliency.

    Returns:
        ``auroc`` (D,) list and ``auroc_mean``; ``loo_drop`` {organ: mean AUROC drop}; ``drop_order``;
        ``curves`` {drop: [mean AUROC with k = 0, 1, ..., O-1 organs dropped]}; ``entropy`` (mean organ-attention
        entropy on test subjects, nats); ``saliency`` {organ: mean saliency where available} and ``uniform_share`` {organ: the mean
        1 / (organs available) over the same subjects, its saliency under uniform attention}; with ``dominant``,
        ``dominant_drop``: AUROC with all organs and with the dominant one dropped, on the test subjects that
        have it (``subjects``: how many), and their difference ``drop``.
    """
    embed = lambda s, a, att=False: embed_subjects(backbone, s.images, a, mean=mean, std=std,  # noqa: E731
                                                    device=device, with_attention=att)
    train_x = embed(train, train.available)[0].numpy()
    models: list = []
    test_x, sal = embed(test, test.available, True)
    auroc = probe_auroc(train_x, train.labels, test_x.numpy(), test.labels, c=c, models=models)

    def score(available: torch.Tensor) -> float:
        x = embed(test, available)[0].numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmean(probe_auroc(train_x, train.labels, x, test.labels, models=models)))

    base = float(np.nanmean(auroc))
    organs = test.organs
    loo = {}
    for o in range(len(organs)):
        keep = test.available.clone()
        keep[:, o] = False
        keep |= test.available & ~keep.any(-1, keepdim=True)  # a subject with only organ o keeps it
        loo[organs[o]] = base - score(keep)
    order = sorted(range(len(organs)), key=lambda o: -loo[organs[o]])
    if dominant is not None:
        order = [dominant] + [o for o in order if o != dominant]
    # MNAR weights: organ o's training missing rate among subjects with the same first label
    y0 = torch.as_tensor(train.labels[:, 0] > 0.5)
    rates = torch.stack([(~train.available[y0 == v]).float().mean(0) if (y0 == v).any() else torch.ones(len(organs))
                         for v in (False, True)])
    mnar_w = rates[torch.as_tensor(test.labels[:, 0] > 0.5).long()]
    curves: dict[str, list[float]] = {}
    for kind in drops:
        if kind not in DROPS:
            raise ValueError(f"unknown organ drop {kind!r}; valid: {', '.join(DROPS)}")
        curve = [base]
        for k in range(1, len(organs)):
            if kind == "dominant":
                curve.append(score(drop_organs(test.available, k, order=order)))
                continue
            g = torch.Generator().manual_seed(seed * 7919 + k)
            curve.append(float(np.mean([score(drop_organs(test.available, k, generator=g,
                                                          weights=mnar_w if kind == "mnar" else None))
                                        for _ in range(repeats)])))
        curves[kind] = curve
    ent = organ_entropy(sal, test.available)
    counts = test.available.sum(0).clamp(min=1)
    out = {"auroc": auroc.tolist(), "auroc_mean": base, "loo_drop": loo, "drop_order": [organs[o] for o in order],
           "curves": curves, "entropy": float(ent.mean()),
           "saliency": dict(zip(organs, ((sal * test.available).sum(0) / counts).tolist())),
           # what each organ's saliency would be if attention were spread evenly over a subject's organs
           "uniform_share": dict(zip(organs, ((test.available / test.available.sum(-1, keepdim=True).clamp(min=1))
                                              .sum(0) / counts).tolist()))}
    has = (test.available[:, dominant] & (test.available.sum(-1) > 1)) if dominant is not None else None
    if has is not None and has.any():
        # only subjects that have the dominant organ lose anything when it is dropped: averaging over the others
        # would dilute the drop by the organ's missing rate
        sub = SubjectSet(test.images[has], test.available[has], test.labels[has.numpy()], test.organs)
        dropped = sub.available.clone()
        dropped[:, dominant] = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            full = float(np.nanmean(probe_auroc(train_x, train.labels, embed(sub, sub.available)[0].numpy(),
                                                sub.labels, models=models)))
            without = float(np.nanmean(probe_auroc(train_x, train.labels, embed(sub, dropped)[0].numpy(),
                                                   sub.labels, models=models)))
        out["dominant_drop"] = {"organ": organs[dominant], "subjects": int(has.sum()), "auroc_all": full,
                                "auroc_dropped": without, "drop": full - without}
    return out


@dataclass
class SubjectsConfig:
    """``subjects.*`` task keys: which subjects, and how to split and drop."""

    num_subjects: int = 400  # synthetic: subjects drawn (first train_fraction train, the rest test)
    # the organ slots, image side and dimensionality; None: the model's (its export's contract); a set value
    # that disagrees with the model is an error
    num_organs: int | None = None
    size: int | None = None
    num_diseases: int = 2
    dim: int | None = None
    # synthetic: the generator world (its seed; the default pretraining world is seed 0) and the first subject
    # index drawn, past any pretraining range (the export records the range it drew; an overlap is refused)
    seed: int = 0
    index_offset: int = 1_000_000
    train_fraction: float = 0.5
    # organ dropped first (and, for synthetic subjects, the generator's dominant organ); None: the largest
    # leave-one-out drop, with the generator's dominant organ that of the pretraining world (else 0)
    dominant: int | None = None
    drops: list[str] = field(default_factory=lambda: list(DROPS))
    repeats: int = 3
    c: float = 1.0


def load_subject_sets(source: str, cfg: SubjectsConfig, organs: list[str] | None = None, *,
                      geometry: dict[str, Any] | None = None,
                      label_columns: list[str] | None = None) -> tuple[SubjectSet, SubjectSet]:
    """(train, test) subjects: ``"synthetic"``, or a manifest's ``train`` and ``test`` splits (a subject or patient
    in both is refused by the manifest reader).

    Args:
        source: ``"synthetic"`` or a subject manifest CSV.
        cfg: the task's ``subjects.*`` settings.
        organs: the model's organ list (manifests).
        geometry: ``num_organs``, ``size``, ``dim``, ``intensity``, ``window``, ``dominant`` and the synthetic
            world's settings (``world``: shortcut strengths, missingness) as the model was trained
            (:func:`subject_geometry`); None: from ``cfg`` (minmax intensity, the generator's defaults).
        label_columns: a manifest's label columns (None: every extra column).
    """
    g = geometry or {"num_organs": cfg.num_organs or 5, "size": cfg.size or 32, "dim": cfg.dim or 2,
                     "intensity": "minmax", "window": None,
                     "dominant": cfg.dominant if cfg.dominant is not None else 0}
    if source == "synthetic":
        from organfm.synthesis.subjects import SyntheticSubjects

        data = SyntheticSubjects(cfg.num_subjects, g["num_organs"], g["size"], cfg.num_diseases, dim=g["dim"],
                                 seed=cfg.seed, index_offset=cfg.index_offset, dominant=g["dominant"],
                                 **g.get("world", {}))
        cut = int(cfg.train_fraction * cfg.num_subjects)
        return SubjectSet.from_dataset(data, range(cut)), SubjectSet.from_dataset(data, range(cut, len(data)))
    from organfm.data.subjects import SubjectImages, read_subject_manifest

    sets = []
    for split in ("train", "test"):
        manifest = read_subject_manifest(source, organs=organs, split=split, label_columns=label_columns)
        sets.append(SubjectSet.from_dataset(SubjectImages(manifest, g["size"], dim=g["dim"], intensity=g["intensity"],
                                                          window=g["window"])))
    return sets[0], sets[1]


def subject_geometry(contract: dict[str, Any], backbone: torch.nn.Module, cfg: SubjectsConfig) -> dict[str, Any]:
    """How subjects must be prepared for this model: organ slots, image side, dimensionality, intensity.

    The export's contract decides (``input_size``, ``intensity``; a random-init model has none, and the backbone
    built for it does); a ``subjects.*`` value that disagrees with the model is an error, not a crash later.

    Raises:
        ValueError: the task's ``subjects.num_organs/size/dim`` disagree with the model, or the backbone is not an
            organ-set encoder.
    """
    if not hasattr(backbone, "tokens_per_organ"):
        raise ValueError(f"protocol subjects needs an organ-set encoder (organ_set_vit), got "
                         f"{type(backbone).__name__}")
    size, dim = int(backbone.model.image_size), int(backbone.spatial_dims)
    input_size = contract.get("input_size") if contract.get("backbone_args") else None
    if input_size:  # an export: its contract and the backbone it rebuilds must agree
        if (len(input_size) - 1, int(input_size[-1])) != (dim, size):
            raise ValueError(f"the export's input_size {input_size} disagrees with its backbone "
                             f"({dim}D, {size} px)")
    model = {"num_organs": int(backbone.num_organs), "size": size, "dim": dim}
    for key, value in model.items():
        asked = getattr(cfg, key)
        if asked is not None and int(asked) != value:
            raise ValueError(f"subjects.{key}={asked} but the model takes {key} {value} (from its export's "
                             f"contract): drop subjects.{key} from the task, or evaluate a model of that size")
    intensity = contract.get("intensity")
    mode = intensity.get("mode") if isinstance(intensity, dict) else intensity
    window = intensity.get("window") if isinstance(intensity, dict) else None
    world = contract.get("synthetic_subjects") or {}
    dominant = cfg.dominant if cfg.dominant is not None else int(world.get("dominant", 0))
    # the pretraining world's shortcut strengths and missingness (older exports record fewer: the generator's
    # defaults stand in for the rest)
    settings = {k: float(world[k]) for k in WORLD if k in world}
    return {**model, "intensity": mode or "minmax", "window": window, "dominant": dominant, "world": settings}


def _check_disjoint(contract: dict[str, Any], cfg: SubjectsConfig) -> None:
    """Evaluation subjects of the pretraining world must not be subjects pretraining saw."""
    world = contract.get("synthetic_subjects")
    if not world:
        return
    if int(world["seed"]) != cfg.seed:
        warnings.warn(f"subjects.seed={cfg.seed} is another synthetic world than the model was pretrained on "
                      f"(seed {world['seed']}): organ anatomy and disease marks differ", stacklevel=2)
        return
    start, stop = int(world["index_offset"]), int(world["index_offset"]) + int(world["num_subjects"])
    if cfg.index_offset < stop and start < cfg.index_offset + cfg.num_subjects:
        raise ValueError(f"evaluation subjects [{cfg.index_offset}, {cfg.index_offset + cfg.num_subjects}) of "
                         f"synthetic world seed {cfg.seed} overlap the pretraining subjects [{start}, {stop}): "
                         f"set subjects.index_offset >= {stop}")


@register_protocol("subjects", config=SubjectsConfig, inputs="own", splits=())
def subjects(run: ModelRun, data: TaskDataConfig, settings: SubjectsConfig) -> list[dict[str, Any]]:
    """Rows: AUROC per disease with all organs, per-organ leave-one-out drop, each robustness curve."""
    cfg = settings
    source = data.source if data.source == "synthetic" else data.resolve(data.source)
    backbone = run.make_backbone()
    geometry = subject_geometry(run.contract, backbone, cfg)
    if source == "synthetic":
        _check_disjoint(run.contract, cfg)
    train, test = load_subject_sets(source, cfg, run.contract.get("organs") or None, geometry=geometry,
                                    label_columns=data.label_columns)
    res = evaluate_subjects(backbone, train, test, mean=run.mean[0], std=run.std[0], dominant=cfg.dominant,
                            drops=tuple(cfg.drops), repeats=cfg.repeats, seed=run.seed, c=cfg.c,
                            device=run.device)
    rows = [make_row(run.name, "subjects", "all organs",
                     {"auroc_mean": [res["auroc_mean"]], "organ_entropy": [res["entropy"]],
                      **{f"auroc_{d}": [v] for d, v in enumerate(res["auroc"])}}),
            make_row(run.name, "subjects", "organ saliency",
                     {**{f"saliency_{o}": [v] for o, v in res["saliency"].items()},
                      **{f"uniform_share_{o}": [v] for o, v in res["uniform_share"].items()}}),
            make_row(run.name, "subjects", "leave one organ out",
                     {f"auroc_drop_{o}": [v] for o, v in res["loo_drop"].items()})]
    if "dominant_drop" in res:
        d = res["dominant_drop"]
        rows.append(make_row(run.name, "subjects", f"drop {d['organ']} where present",
                             {"auroc_all": [d["auroc_all"]], "auroc_dropped": [d["auroc_dropped"]],
                              "auroc_drop": [d["drop"]]}, subjects=d["subjects"]))
    for kind, curve in res["curves"].items():
        rows.append(make_row(run.name, "subjects", f"drop {kind}",
                             {f"auroc_k{k}": [v] for k, v in enumerate(curve)}, drop_order=res["drop_order"]))
    return rows
