"""Subject-level protocols: organ drops keep the rules, AUROC of a planted signal, curves and LOO from a model."""
from __future__ import annotations

import numpy as np
import torch

from organfm.backbones import create_backbone
from organfm.evaluation.subjects import SubjectSet, drop_organs, evaluate_subjects, probe_auroc
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
    forced = evaluate_subjects(bb, train, test, repeats=1, dominant=2, drops=("dominant",))
    assert forced["drop_order"][0] == "liver" and list(forced["curves"]) == ["dominant"]


def test_subjects_is_a_registered_protocol_with_its_task_keys():
    from organfm.evaluation.protocol import get_protocol
    from organfm.evaluation.task import load_task

    spec = get_protocol("subjects")
    assert spec.inputs == "own" and spec.splits == ()
    task = load_task("configs/tasks/panfm_synthetic.yaml", ["subjects.repeats=1"])
    assert task.protocols == ["subjects"] and task.subjects.repeats == 1 and task.subjects.num_organs == 5
