"""The functions the command line calls, for Python users: ``organfm.pretrain``, ``organfm.evaluate``, ``organfm.embed``.

Each takes what its command takes (a config or task name or file, ``key=value`` overrides as a list or a
dict) and returns what the command prints from::

    import organfm
    summary = organfm.pretrain("small/coda", {"trainer.max_steps": 100, "data": "images/"})
    results = organfm.evaluate({"coda": summary.run_dir, "scratch": "random:convnext_atto"}, "mednist")
    feats = organfm.embed(summary.run_dir, "images/", "feats/coda")
    model, preprocess = organfm.load(summary.run_dir)
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["embed", "evaluate", "pretrain"]

Overrides = Sequence[str] | Mapping[str, Any] | None


def _items(overrides: Overrides) -> list[str]:
    """``{"a.b": 1}`` or ``["a.b=1"]`` -> ``["a.b=1"]`` (values written as YAML, as on the command line)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        import yaml

        return [f"{k}={v if isinstance(v, str) else yaml.safe_dump(v, default_flow_style=True).strip()}"
                .replace("\n...", "") for k, v in overrides.items()]
    return [str(o) for o in overrides]


def pretrain(config: str | os.PathLike[str] | None = None, overrides: Overrides = None, *,
             method: str | None = None, resume: str | os.PathLike[str] | None = None):
    """Pretrain a backbone, as ``organfm pretrain`` does.

    Args:
        config: a recipe file or a shipped recipe's name (``coda``, ``small/coda``); None: the defaults.
        overrides: ``key=value`` strings or a ``{key: value}`` dict (``data=`` is ``data.source=``).
        method: a registered method (default: the config's, else ``coda``).
        resume: continue the run in this folder (only ``trainer.*`` keys may change).

    Returns:
        ``organfm.engine.pretrain.PretrainSummary`` (run folder, checkpoint, export, health, ...).

    Raises:
        ConfigError: an unknown key or a bad value; ValueError, OSError: what the run met.
    """
    from organfm.config import ConfigError, load_config, parse_overrides
    from organfm.engine.pretrain import pretrain as run

    items = _items(overrides)
    if resume is not None:
        run_dir = Path(resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"cannot resume {run_dir}: it has no config.yaml (is it an organfm run folder?)")
        changed = [k for k in parse_overrides(items) if not k.startswith("trainer.")]
        if changed:
            raise ConfigError(f"a resumed run keeps its config; only trainer.* keys may change, not {', '.join(changed)}")
        cfg = load_config(None, saved, items)
        if method and method != cfg.method_name:
            raise ConfigError(f"{run_dir} is a {cfg.method_name} run, not {method}")
        cfg.trainer.out_dir = str(run_dir)
    else:
        cfg = load_config(method, config, items)
        source = Path(cfg.data.source)
        if cfg.data.source != "synthetic" and source.exists():
            cfg.data.source = str(source.resolve())  # a resumed run must find its data from any folder
    return run(cfg, resume_dir=resume)


def evaluate(models: str | Mapping[str, str | os.PathLike[str]], task: str | os.PathLike[str],
             overrides: Overrides = None) -> dict[str, Any]:
    """Evaluate encoders on a task, as ``organfm evaluate`` does (results folder, report, model cards).

    Args:
        models: ``{name: spec}`` or ``"name=spec,name=spec"`` (run or export folders, ``random:<arch>``, ...).
        task: a task file or a shipped task's name (``mednist``).
        overrides: ``key=value`` strings or a ``{key: value}`` dict of task keys.

    Returns:
        The results dict (``rows``, ``out_dir``, ...) that ``results.json`` holds.
    """
    from organfm.features.encoders import parse_models
    from organfm.evaluation.suite import evaluate_models
    from organfm.evaluation.task import changed_settings, load_task

    specs = parse_models(models) if isinstance(models, str) else {k: str(v) for k, v in models.items()}
    cfg = load_task(task, _items(overrides))
    # the report names what the overrides changed: the task file's note was written for its own values
    changed = changed_settings(load_task(task), cfg) if overrides else {}
    results = evaluate_models(cfg, specs, changed=changed)
    _record_on_exports(specs, cfg, results)
    return results


def embed(model: str | os.PathLike[str], data: str | os.PathLike[str] | None, out: str | os.PathLike[str],
          overrides: Overrides = None, *, formats: Sequence[str] = ("npy",), joint: bool = False,
          texts: str = "none", text_column: str = "text", caption_modality: str = "medical",
          log: Callable[[str], None] | None = None, **kwargs: Any):
    """One model's features of every image of ``data``, as ``organfm embed`` does.

    Args:
        model: a model spec (run or export folder, ``.safetensors``, ``random:<arch>``, ``timm:<arch>:<file>``).
        data: the images (any ``data.source``: a folder, a manifest, an archive, ...); None: ``overrides``' ``data``.
        out: the features folder (new, empty, or an earlier ``organfm embed`` folder).
        overrides: ``data.*`` keys (``data.split`` defaults to ``all``: every image; ``data.dedup`` to false:
            exact duplicates are embedded and marked in ``index.csv``, never dropped).
        formats: besides the ``.npy`` shards, ``csv`` (``features.csv``) and/or ``parquet`` (``features.parquet``).
        joint: also each image in the model's joint image-text space (``joint-images.npy``).
        texts: ``none``, ``auto``, ``column`` or ``captions``: also each image's text in that space.
        text_column: the manifest column of each image's text.
        caption_modality: the modality word of templated captions.
        log: receives progress lines (one per written shard).
        **kwargs: :func:`organfm.features.store.embed_dataset` arguments (``batch_size``, ``device``, ...).

    Returns:
        ``organfm.features.store.EmbedResult``; ``index.csv`` in ``out`` names every row's image. A SIGTERM or
        SIGINT ends it at a shard boundary (``interrupted``); the same call resumes.
    """
    from dataclasses import asdict

    from organfm.batches.views import build_image_dataset
    from organfm.config import Config, ConfigError, apply_overrides, parse_overrides
    from organfm.engine.loop import StopRequest
    from organfm.features.store import embed_dataset, is_features_folder, open_features_folder
    from organfm.evaluation.tables import TABLE_FORMATS, write_table
    from organfm.outputs import FolderLock, check_output_folder

    unknown = [f for f in formats if f not in TABLE_FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(TABLE_FORMATS)}")
    if "parquet" in formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError:  # before any image is embedded
            raise ValueError("--format parquet needs pyarrow, which is not installed: `pip install pyarrow`, or use "
                             "--format csv") from None
    items = parse_overrides(_items(overrides))
    bad = [k for k in items if k != "data" and not k.startswith("data.")]
    if bad:
        raise ConfigError(f"organfm embed takes data.* keys only, not {', '.join(bad)}")
    base = {"data.split": "all", "data.dedup": False, **({"data.source": str(data)} if data is not None else {})}
    cfg = apply_overrides(Config(), {**base, **items})
    out = str(out)
    check_output_folder(out, "embed", recognise=is_features_folder)  # a refusal writes nothing, not a lock
    with FolderLock(out, "embed"), StopRequest() as stop:  # one embed per folder; a stop ends at a shard
        open_features_folder(out)  # marked before skips/ is written into it
        dataset = build_image_dataset(cfg.data, skip_log_dir=f"{out}/skips")
        joint_wanted, text_list = joint or texts != "none", None
        if joint_wanted:  # a model without a text tower, or an empty text, fails before any image is embedded
            from organfm.batches.texts import dataset_texts
            from organfm.features.encoders import load_encoder

            if "text" not in load_encoder(str(model), image_size=kwargs.get("image_size"))[1]:
                raise ValueError(f"--joint/--texts: {model} has no text tower (export/text/); only models trained "
                                 "with texts (method imagetext, or mmkd with texts) have a joint image-text space")
            text_list = dataset_texts(dataset, mode=texts, column=text_column, modality=caption_modality,
                                      where=str(cfg.data.source))
        result = embed_dataset(str(model), dataset, out, data_identity=asdict(cfg.data), log=log,
                               should_stop=lambda: stop.requested, **kwargs)
        if result.interrupted:
            return result
        for fmt in formats:
            if fmt != "npy":
                path = write_table(out, fmt)
                if log:
                    log(f"{path}: ids and features, one row per image")
        if joint_wanted:
            from organfm.features.joint import embed_joint

            done = embed_joint(out, texts=text_list)
            made = "joint-images.npy" + (" and joint-texts.npy" if text_list is not None else "")
            if log:
                log(f"{out}: {made} {'reused' if done['reused'] else 'written'}")
    return result


def _record_on_exports(specs: Mapping[str, str], task: Any, results: dict[str, Any]) -> None:
    """Each evaluated organfm export keeps its results (``evaluation.json``) and shows them in its model card."""
    from organfm.engine.model_folder import record_evaluation

    for name, spec in specs.items():
        path = Path(spec).expanduser()
        folder = next((f for f in (path, path / "export") if (f / "backbone.json").is_file()), None) \
            if path.is_dir() else None
        rows = [r for r in results.get("rows", []) if r.get("model") == name]
        if folder is None or not rows:
            continue
        try:
            record_evaluation(folder, task=str(getattr(task, "name", None) or "task"), model=name, rows=rows)
        except OSError:  # a read-only export still has its results folder
            pass
