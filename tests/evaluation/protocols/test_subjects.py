"""Subject-level protocols: organ drops keep the rules, AUROC of a planted signal, curves and LOO from a model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from organfm.backbones import create_backbone
from organfm.evaluation.protocols.subjects import SubjectSet, drop_organs, evaluate_subjects, probe_auroc
from organfm.synthesis.subjects import SyntheticSubjects


def test_drop_organs_follows_the_order_keeps_one_and_never_adds():
    available = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 0], [0, 0, 1, 0]], dtype=torch.bool)
    one = drop_organs(available, 1, order=[2, 0, 1, 3])
    assert one.tolist() == [[True, True, False, True], [False, True, False, False], [False, False, True, False]]
    g = torch.Generator().manual_seed(0)
    for k in range(4):
        for weights in (None, torch.rand(3, 4)):
            out = drop_organs(available, k, weights=weights, generator=g)
            assert not (out & ~available).any() and out.any(-1).all()
            assert torch.equal(out.sum(-1), torch.clamp(available.sum(-1) - k, min=1))


def test_mnar_weights_pick_the_heavier_organ():
    available = torch.ones(2000, 2, dtype=torch.bool)
    weights = torch.tensor([[0.9, 0.1]]).repeat(2000, 1)
    out = drop_organs(available, 1, weights=weights, generator=torch.Generator().manual_seed(0))
    assert abs((~out[:, 0]).float().mean().item() - 0.9) < 0.03


def test_probe_auroc_is_high_for_a_planted_feature_and_half_for_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 2)).astype(float)
    x = np.c_[y[:, 0] + 0.3 * rng.normal(size=400), rng.normal(size=(400, 3))]
    auc = probe_auroc(x[:200], y[:200], x[200:], y[200:])
    assert auc[0] > 0.95 and abs(auc[1] - 0.5) < 0.12


def test_evaluate_subjects_reports_curves_loo_and_entropy():
    data = SyntheticSubjects(80, 3, 16, seed=5)
    train, test = SubjectSet.from_dataset(data, range(40)), SubjectSet.from_dataset(data, range(40, 80))
    torch.manual_seed(0)
    bb = create_backbone("organ_set_vit", num_organs=3, image_size=16, patch_size=8, embed_dim=32, depth=1,
                         num_heads=2)
    res = evaluate_subjects(bb, train, test, repeats=1)
    assert len(res["auroc"]) == 2 and set(res["loo_drop"]) == {"heart", "brain", "liver"}
    assert all(len(c) == 3 and c[0] == res["auroc_mean"] for c in res["curves"].values())
    assert 0 < res["entropy"] <= np.log(3) + 1e-6
    assert set(res["saliency"]) == {"heart", "brain", "liver"} and all(0 < v < 1 for v in res["saliency"].values())
    assert res["drop_order"][0] == max(res["loo_drop"], key=res["loo_drop"].get)
    # the uniform share by hand: mean over the subjects that have the organ of 1 / (their organ count)
    for o, organ in enumerate(test.organs):
        has = test.available[:, o]
        expected = float((1.0 / test.available[has].sum(-1).float()).mean())
        assert abs(res["uniform_share"][organ] - expected) < 1e-6
    forced = evaluate_subjects(bb, train, test, repeats=1, dominant=2, drops=("dominant",))
    assert forced["drop_order"][0] == "liver" and list(forced["curves"]) == ["dominant"]


def test_subjects_is_a_registered_protocol_with_its_task_keys():
    from organfm.evaluation.protocol import get_protocol
    from organfm.evaluation.task import load_task

    spec = get_protocol("subjects")
    assert spec.inputs == "own" and spec.splits == ()
    task = load_task("configs/tasks/panfm_synthetic.yaml", ["subjects.repeats=1"])
    assert task.protocols == ["subjects"] and task.subjects.repeats == 1
    # the size comes from the model; the subjects are the pretraining world's (seed 0), past its indices
    assert task.subjects.num_organs is None and task.subjects.size is None
    assert task.subjects.seed == 0 and task.subjects.index_offset >= 100_000 and task.subjects.dominant == 0
    assert task.subjects.num_subjects >= 1000 and task.subjects.train_fraction == 0.5


def _run(backbone, contract, overrides=(), cache_dir="."):
    from organfm.features.extraction import FeatureCache
    from organfm.evaluation.task import load_task
    from tests.evaluation.conftest import model_run

    task = load_task("configs/tasks/panfm_synthetic.yaml", ["subjects.repeats=1", "subjects.num_subjects=40",
                                                            "subjects.drops=[dominant]", *overrides])
    run = model_run("m", lambda: backbone, {"mean": [0.5], "std": [0.5], **contract}, task, "cpu",
                    FeatureCache(cache_dir))
    return run, task.data, task.subjects


def _export_contract(bb, **extra):
    size = bb.model.image_size
    return {"backbone_args": dict(bb.backbone_args), "input_size": [1, size, size],
            "organs": ["heart", "brain", "liver"], **extra}


def test_the_protocol_takes_the_subjects_size_from_the_models_contract():
    from organfm.evaluation.protocols.subjects import subjects

    torch.manual_seed(0)
    bb = create_backbone("organ_set_vit", num_organs=3, image_size=48, patch_size=16, embed_dim=16, depth=1,
                         num_heads=2)
    rows = subjects(*_run(bb, _export_contract(bb)))  # a 48 px model: subjects are drawn at 48 px
    assert rows[0]["setting"] == "all organs" and 0 <= rows[0]["metrics"]["auroc_mean"]["mean"] <= 1
    assert any(r["setting"] == "drop heart where present" and r["subjects"] > 0 for r in rows)
    with pytest.raises(ValueError, match="subjects.size=32 but the model takes size 48"):
        subjects(*_run(bb, _export_contract(bb), ["subjects.size=32"]))


def test_the_protocol_refuses_evaluation_subjects_that_pretraining_saw():
    from organfm.evaluation.protocols.subjects import subjects

    bb = create_backbone("organ_set_vit", num_organs=3, image_size=16, patch_size=8, embed_dim=16, depth=1,
                         num_heads=2)
    world = {"seed": 0, "index_offset": 0, "num_subjects": 256, "dominant": 0}
    with pytest.raises(ValueError, match="overlap the pretraining subjects"):
        subjects(*_run(bb, _export_contract(bb, synthetic_subjects=world), ["subjects.index_offset=200"]))


def test_the_evaluation_subjects_are_drawn_with_the_pretraining_worlds_settings(monkeypatch):
    from organfm.evaluation.protocols import subjects as module
    from organfm.synthesis import subjects as synthesis

    bb = create_backbone("organ_set_vit", num_organs=3, image_size=16, patch_size=8, embed_dim=16, depth=1,
                         num_heads=2)
    world = {"seed": 0, "index_offset": 0, "num_subjects": 10, "dominant": 0, "dominant_strength": 0.9,
             "subtle_strength": 0.0, "noise": 0.01, "missing_prob": 0.05, "mnar_strength": 0.0}
    made = []
    real = synthesis.SyntheticSubjects

    def spy(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(synthesis, "SyntheticSubjects", spy)
    module.subjects(*_run(bb, _export_contract(bb, synthetic_subjects=world),
                          ["subjects.num_subjects=40", "subjects.index_offset=10", "subjects.repeats=1"]))
    keys = ("dominant_strength", "subtle_strength", "noise", "missing_prob", "mnar_strength")
    assert made and {k: made[0][k] for k in keys} == {"dominant_strength": 0.9, "subtle_strength": 0.0, "noise": 0.01,
                                                      "missing_prob": 0.05, "mnar_strength": 0.0}
    assert "dominant_missing_prob" not in made[0]  # not recorded (an older export): the generator's default


def test_manifest_subjects_follow_the_contracts_intensity_mode(tmp_path, monkeypatch):
    from organfm.evaluation.protocols import subjects as module

    seen = {}

    def spy(source, cfg, organs=None, *, geometry=None, label_columns=None):
        seen.update(geometry)
        raise RuntimeError("stop")

    monkeypatch.setattr(module, "load_subject_sets", spy)
    bb = create_backbone("organ_set_vit", num_organs=3, image_size=16, patch_size=8, embed_dim=16, depth=1,
                         num_heads=2)
    contract = _export_contract(bb, intensity={"mode": "window", "window": [40.0, 400.0]})
    with pytest.raises(RuntimeError, match="stop"):
        module.subjects(*_run(bb, contract, ["data.source=subjects.csv"]))
    assert seen["intensity"] == "window" and seen["window"] == [40.0, 400.0] and seen["size"] == 16


def test_manifest_images_are_read_with_the_given_intensity(tmp_path):
    from PIL import Image

    from organfm.evaluation.protocols.subjects import SubjectsConfig, load_subject_sets

    rows = []
    for s in range(4):
        Image.fromarray(np.full((8, 8), 100 + 20 * s, dtype=np.uint8)).save(tmp_path / f"h{s}.png")
        rows.append(f"s{s},heart,h{s}.png,{'train' if s < 2 else 'test'},{s % 2}")
    (tmp_path / "m.csv").write_text("subject,organ,path,split,disease\n" + "\n".join(rows) + "\n")
    geometry = {"num_organs": 1, "size": 8, "dim": 2, "intensity": "dtype", "window": None, "dominant": 0}
    train, _ = load_subject_sets(str(tmp_path / "m.csv"), SubjectsConfig(), geometry=geometry)
    # dtype scaling keeps the grey level (100/255); minmax would have made a flat image 0
    assert torch.allclose(train.images[0, 0], torch.full((1, 8, 8), 100 / 255), atol=1e-6)
