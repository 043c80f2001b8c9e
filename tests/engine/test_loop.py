"""The loop on a toy method whose right answer is known: accumulation, clipping, freezing, teacher updates."""
from __future__ import annotations

import itertools

import pytest
import torch
from lightning.fabric import Fabric
from torch import nn

from organfm.engine.loop import train
from organfm.engine.schedules import Schedules
from organfm.methods.base import Method, StepOutput


class Toy(Method):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.student = nn.ModuleDict({"backbone": nn.Linear(3, 1, bias=False), "last": nn.Linear(1, 1, bias=False)})
        self.momenta: list[float] = []

    def forward(self, batch, state):
        pred = self.student["last"](self.student["backbone"](batch["x"]))
        loss = ((pred.squeeze(1) - batch["y"]) ** 2).mean()
        return StepOutput(loss=loss, logs={"loss": loss.detach()})

    def after_step(self, state):
        self.momenta.append(state["momentum"])

    def last_layer_parameters(self):
        return list(self.student["last"].parameters())


def data(batch_size):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    for i in itertools.count():
        j = (i * batch_size) % 64
        yield {"x": x[j:j + batch_size], "y": y[j:j + batch_size]}


def schedules(n, lr=0.1):
    return Schedules({"lr": torch.full((n,), lr).numpy(), "weight_decay": torch.zeros(n).numpy(),
                      "momentum": torch.linspace(0.9, 1.0, n).numpy(), "teacher_temp": torch.full((n,), 0.04).numpy()})


def fit(batch_size, accumulate, steps=4, **kw):
    fabric = Fabric(accelerator="cpu", devices=1)
    method = Toy()
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    wrapped, opt = fabric.setup(method, opt)
    result = train(fabric, wrapped, opt, data(batch_size), schedules(steps), start_step=0, max_steps=steps,
                   accumulate_grad_batches=accumulate, save=lambda step: None, log_every=1, **kw)
    return method, result


def test_accumulation_equals_the_large_batch_for_a_mean_loss():
    big, _ = fit(8, 1)
    acc, _ = fit(4, 2)
    for a, b in zip(big.parameters(), acc.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_teacher_is_updated_once_per_step_with_the_scheduled_momentum():
    m, result = fit(8, 2, steps=4)
    assert m.momenta == pytest.approx(torch.linspace(0.9, 1.0, 4).tolist())
    assert result.step == 4 and set(result.last_logs) >= {"loss", "lr", "momentum", "teacher_temp"}


def test_last_layer_frozen_for_the_first_steps_only():
    m0 = Toy()
    frozen, _ = fit(8, 1, steps=2, freeze_last_layer_steps=2)
    assert torch.equal(frozen.student["last"].weight, m0.student["last"].weight)
    assert not torch.equal(frozen.student["backbone"].weight, m0.student["backbone"].weight)
    thawed, _ = fit(8, 1, steps=3, freeze_last_layer_steps=2)
    assert not torch.equal(thawed.student["last"].weight, m0.student["last"].weight)


def test_gradient_clipping_bounds_the_update():
    m0 = Toy()
    clipped, _ = fit(8, 1, steps=1, clip_grad=1e-3)
    step = torch.cat([(a - b).flatten() for a, b in zip(clipped.parameters(), m0.parameters())])
    assert step.norm() <= 0.1 * 1e-3 + 1e-7  # SGD: |update| = lr * |clipped grad|


def test_the_method_sees_every_scheduled_value_and_the_epoch():
    seen = []

    class Spy(Toy):
        def forward(self, batch, state):
            seen.append((state.step, state.epoch, dict(state.values)))
            return super().forward(batch, state)

    fabric = Fabric(accelerator="cpu", devices=1)
    method = Spy()
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    wrapped, opt = fabric.setup(method, opt)
    train(fabric, wrapped, opt, data(8), schedules(4), start_step=1, max_steps=3, steps_per_epoch=2,
          save=lambda step: None)
    assert [(s, e) for s, e, _ in seen] == [(1, 0.5), (2, 1.0)]
    assert seen[0][2]["momentum"] == pytest.approx(torch.linspace(0.9, 1.0, 4)[1].item())
    assert set(seen[0][2]) == {"lr", "weight_decay", "momentum", "teacher_temp"}


def test_a_stop_requested_while_logging_still_ends_with_a_checkpoint():
    """The signal may land at any moment of a step (here: inside the log callback of step 2)."""
    import signal as sig

    saved = []

    def on_log(step, scalars):
        if step == 2:
            sig.raise_signal(sig.SIGINT)  # the loop's handler sets the stop flag

    fabric = Fabric(accelerator="cpu", devices=1)
    method = Toy()
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    wrapped, opt = fabric.setup(method, opt)
    result = train(fabric, wrapped, opt, data(8), schedules(8), start_step=0, max_steps=8, log_every=1,
                   checkpoint_every=100, save=lambda step: saved.append(step) or step, on_log=on_log)
    assert result.interrupted and result.step == saved[-1]  # it stopped at a checkpointed step
