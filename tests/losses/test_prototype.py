"""RaSD's prototype disentanglement loss: a hand-computed case, a naive-loop reference, invariances."""
from __future__ import annotations

import math

import pytest
import torch

from organfm.losses import PrototypeDisentanglementLoss, region_prototypes


def softplus_neg(x: float) -> float:
    """-log sigmoid(x) = log(1 + e^-x): the two-class cross-entropy of a logit margin x."""
    return math.log1p(math.exp(-x))


def test_hand_computed_two_class_case():
    # 1 sample, C = 2, three pixels: f = [2, 0], [0, 1], [0, 3]; labels 0, 1, 1.
    features = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]).view(1, 2, 1, 3)
    labels = torch.tensor([0, 1, 1]).view(1, 1, 1, 3)
    # P_0 = [2, 0], P_1 = mean([0, 1], [0, 3]) = [0, 2]
    prototypes, present = region_prototypes(features.view(1, 2, 3), torch.eye(2)[labels.view(3)].T[None])
    assert torch.allclose(prototypes, torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])) and present.all()
    loss = PrototypeDisentanglementLoss(temp=1.0)
    terms = loss.terms(features, labels, num_labels=2)
    # pixel logits <P_k, f(x)>: (4, 0), (0, 2), (0, 6) -> margins 4, 2, 6 in favour of the label
    seg = (softplus_neg(4) + softplus_neg(2) + softplus_neg(6)) / 3
    # Gram = [[4, 0], [0, 4]]: each column's own prototype wins by a margin of 4
    proto = softplus_neg(4)
    assert terms["seg"].item() == pytest.approx(seg, rel=1e-5)
    assert terms["proto"].item() == pytest.approx(proto, rel=1e-5)
    assert loss(features, labels, num_labels=2).item() == pytest.approx(seg + proto, rel=1e-5)
    # the reference's mean over all elements divides each term by K = 2
    ref = PrototypeDisentanglementLoss(temp=1.0, reduction="elementwise_mean").terms(features, labels, num_labels=2)
    assert ref["seg"].item() == pytest.approx(seg / 2, rel=1e-5)
    assert ref["proto"].item() == pytest.approx(proto / 2, rel=1e-5)


def naive_terms(features: torch.Tensor, labels: torch.Tensor, num_labels: int, temp: float) -> tuple[float, float]:
    """Plain Python loops over samples, labels and pixels (the "mean" reduction)."""
    b, c = features.shape[:2]
    f = features.reshape(b, c, -1).double()
    y = labels.reshape(b, -1)
    seg_sum, seg_n, proto_sum, proto_n = 0.0, 0, 0.0, 0
    for i in range(b):
        protos = {}
        for k in range(num_labels):
            members = [x for x in range(f.shape[2]) if y[i, x] == k]
            if members:
                protos[k] = sum(f[i, :, x] for x in members) / len(members)
        for x in range(f.shape[2]):
            logits = {k: float(p @ f[i, :, x]) / temp for k, p in protos.items()}
            log_z = math.log(sum(math.exp(v - max(logits.values())) for v in logits.values())) + max(logits.values())
            seg_sum += log_z - logits[int(y[i, x])]
            seg_n += 1
        for j, pj in protos.items():
            column = {k: float(pk @ pj) / temp for k, pk in protos.items()}
            top = max(column.values())
            log_z = math.log(sum(math.exp(v - top) for v in column.values())) + top
            proto_sum += log_z - column[j]
            proto_n += 1
    return seg_sum / seg_n, proto_sum / proto_n


@pytest.mark.parametrize("spatial", [(5, 4), (3, 2, 4)])
def test_matches_a_naive_loop_with_absent_labels(spatial):
    g = torch.Generator().manual_seed(0)
    num_labels = 4
    features = torch.randn(2, 3, *spatial, generator=g)
    labels = torch.randint(0, num_labels, (2, 1, *spatial), generator=g)
    labels[0][labels[0] == 2] = 1  # label 2 absent from sample 0
    labels[1][labels[1] == 3] = 0  # label 3 absent from sample 1
    seg, proto = naive_terms(features, labels, num_labels, temp=0.5)
    terms = PrototypeDisentanglementLoss(temp=0.5).terms(features, labels, num_labels=num_labels)
    assert terms["seg"].item() == pytest.approx(seg, rel=1e-5)
    assert terms["proto"].item() == pytest.approx(proto, rel=1e-5)


def test_absent_labels_drop_out_and_gradients_stay_finite():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2, 4, 6, 6, generator=g, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 6, 6), generator=g)
    loss = PrototypeDisentanglementLoss()
    three = loss(features, labels, num_labels=3)
    eight = loss(features, labels, num_labels=8)  # five labels absent everywhere
    assert torch.allclose(three, eight)
    assert torch.allclose(loss(features, labels), three)  # K inferred from the labels
    eight.backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0


def test_invariant_to_renaming_labels_and_one_label_gives_zero_push():
    g = torch.Generator().manual_seed(2)
    features = torch.randn(1, 4, 5, 5, generator=g)
    labels = torch.randint(0, 3, (1, 1, 5, 5), generator=g)
    renamed = torch.tensor([2, 0, 1])[labels]
    loss = PrototypeDisentanglementLoss(temp=0.2)
    assert torch.allclose(loss(features, labels, num_labels=3), loss(features, renamed, num_labels=3))
    one = loss.terms(features, torch.zeros_like(labels), num_labels=3)
    assert one["seg"].item() == pytest.approx(0.0, abs=1e-7)  # a single region: softmax over one prototype
    assert one["proto"].item() == pytest.approx(0.0, abs=1e-7)


def test_elementwise_mean_is_mean_over_k_when_all_labels_present():
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 3, 8, 8, generator=g)
    labels = torch.arange(4).repeat_interleave(16).view(1, 1, 8, 8).repeat(2, 1, 1, 1)
    mean = PrototypeDisentanglementLoss().terms(features, labels, num_labels=4)
    ref = PrototypeDisentanglementLoss(reduction="elementwise_mean").terms(features, labels, num_labels=4)
    for key in ("seg", "proto"):
        assert ref[key].item() == pytest.approx(mean[key].item() / 4, rel=1e-5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="temp"):
        PrototypeDisentanglementLoss(temp=0)
    with pytest.raises(ValueError, match="reduction"):
        PrototypeDisentanglementLoss(reduction="sum")
    with pytest.raises(ValueError, match="do not match"):
        PrototypeDisentanglementLoss()(torch.randn(1, 2, 4, 4), torch.zeros(1, 1, 4, 5, dtype=torch.long))
