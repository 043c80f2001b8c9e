"""A non-finite loss stops the run before the weights change, also when the host reads it only every k steps."""
from __future__ import annotations

import itertools

import pytest
import torch
from lightning.fabric import Fabric
from torch import nn

from organfm.engine.loop import NonFiniteLossError, default_check_finite_every, train
from organfm.engine.optim import build_optimizer
from organfm.engine.schedules import Schedules
from organfm.methods.base import Method, StepOutput


class Toy(Method):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.student = nn.ModuleDict({"backbone": nn.Linear(3, 1)})

    def forward(self, batch, state):
        loss = ((self.student["backbone"](batch["x"]).squeeze(1) - batch["y"]) ** 2).mean() * batch["scale"]
        return StepOutput(loss=loss, logs={"loss": loss.detach()})


def batches(bad_step):
    g = torch.Generator().manual_seed(1)
    for i in itertools.count():
        x = torch.randn(8, 3, generator=g)
        yield {"x": x, "y": x.sum(1), "scale": torch.tensor(float("nan") if i >= bad_step else 1.0)}


def run(steps, *, bad_step=10**9, fused=True, every=None):
    fabric = Fabric(accelerator="cpu", devices=1)
    method = Toy()
    opt = build_optimizer(method, lr=0.1, fused=fused)
    wrapped, opt = fabric.setup(method, opt)
    n = 20
    sched = Schedules({"lr": torch.full((n,), 0.1).numpy(), "weight_decay": torch.full((n,), 0.1).numpy()})
    saved = []
    result = None
    try:
        result = train(fabric, wrapped, opt, batches(bad_step), sched, start_step=0, max_steps=steps,
                       save=lambda s: saved.append(s), checkpoint_every=100, log_every=100, check_finite_every=every)
    finally:
        params = {k: v.detach().clone() for k, v in method.state_dict().items()}
        state_steps = [float(s["step"]) for s in opt.optimizer.state.values()]
    return params, state_steps, saved, result


def test_deferred_check_skips_every_update_from_the_bad_step_and_raises_at_the_next_read():
    good, good_steps, _, _ = run(2)  # two finite steps
    with pytest.raises(NonFiniteLossError, match="at step 2;") as e:
        run(8, bad_step=2, every=4)
    assert "Last good checkpoint: none yet" in str(e.value)
    # rerun to inspect the weights at the moment of the raise (the same seeds: same run)
    fabric = Fabric(accelerator="cpu", devices=1)
    method = Toy()
    opt = build_optimizer(method, lr=0.1, fused=True)
    wrapped, opt = fabric.setup(method, opt)
    sched = Schedules({"lr": torch.full((20,), 0.1).numpy(), "weight_decay": torch.full((20,), 0.1).numpy()})
    with pytest.raises(NonFiniteLossError):
        train(fabric, wrapped, opt, batches(2), sched, start_step=0, max_steps=8, save=lambda s: None,
              checkpoint_every=100, log_every=100, check_finite_every=4)
    after = method.state_dict()
    assert all(torch.equal(after[k], good[k]) for k in good)  # steps 2 and 3 changed nothing
    assert [float(s["step"]) for s in opt.optimizer.state.values()] == good_steps == [2.0, 2.0]


def test_no_checkpoint_is_written_after_a_bad_step():
    with pytest.raises(NonFiniteLossError, match="at step 1;"):
        run(3, bad_step=1, every=4)  # the final checkpoint at step 3 reads the flag first
    _, _, saved, _ = run(3, every=4)
    assert saved == [3]


def test_finite_runs_are_identical_with_and_without_deferral():
    a, _, _, _ = run(5, every=1)
    b, _, _, _ = run(5, every=4)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_each_step_check_raises_at_once_and_deferral_needs_a_fused_optimizer():
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 1;"):
        run(6, bad_step=1, fused=False)
    with pytest.raises(ValueError, match="fused optimizer"):
        run(2, fused=False, every=4)


def test_default_reads_each_step_on_cpu_and_every_log_step_on_an_accelerator_with_fused_adamw():
    fused = build_optimizer(nn.Linear(2, 2), lr=0.1, fused=True)
    plain = build_optimizer(nn.Linear(2, 2), lr=0.1)
    assert default_check_finite_every(fused, torch.device("cpu"), 10) == 1
    assert default_check_finite_every(fused, torch.device("cuda", 0), 10) == 10
    assert default_check_finite_every(plain, torch.device("cuda", 0), 10) == 1
