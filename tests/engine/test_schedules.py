import numpy as np
import pytest

from organfm.engine.schedules import ScheduleContext, build_schedules, cosine_schedule, warmup_constant_schedule


def test_cosine_endpoints_warmup_and_monotonicity():
    s = cosine_schedule(1.0, 0.1, 100, warmup_steps=10)
    assert len(s) == 100
    assert s[0] == 0.0 and s[10] == pytest.approx(1.0) and s[-1] == pytest.approx(0.1)
    assert np.all(np.diff(s[:11]) > 0) and np.all(np.diff(s[10:]) <= 0)
    # the midpoint of the cosine part is halfway between base and final
    n = 90
    assert s[10 + (n - 1) // 2] == pytest.approx(0.55, abs=0.01)


def test_increasing_cosine_for_momentum():
    m = cosine_schedule(0.996, 1.0, 50)
    assert m[0] == pytest.approx(0.996) and m[-1] == pytest.approx(1.0) and np.all(np.diff(m) >= 0)


def test_teacher_temperature_warmup():
    t = warmup_constant_schedule(0.04, 0.07, 30, 100)
    assert t[0] == pytest.approx(0.04) and t[29] == pytest.approx(0.07) and np.all(t[30:] == 0.07)


def _ctx(total_steps):
    from organfm.config import OptimConfig, TeacherConfig

    optim = OptimConfig(lr=1e-3, min_lr=1e-6, warmup_epochs=1, weight_decay=0.04, weight_decay_end=0.4)
    teacher = TeacherConfig(momentum=0.996, momentum_end=1.0, temp=0.07, warmup_temp=0.04, warmup_temp_epochs=3)
    return ScheduleContext(total_steps=total_steps, steps_per_epoch=10, optim=optim, teacher=teacher)


def test_horizon_is_independent_of_where_training_stops():
    s = build_schedules(("momentum", "teacher_temp"), _ctx(200))
    assert len(s) == 200 and s.at(10)["lr"] == pytest.approx(1e-3)
    assert s.at(10_000) == s.at(199)  # training past the horizon keeps the last values
    assert s.at(0)["weight_decay"] == pytest.approx(0.04) and s.at(199)["weight_decay"] == pytest.approx(0.4)
    assert s.at(0)["teacher_temp"] == pytest.approx(0.04) and s.at(30)["teacher_temp"] == pytest.approx(0.07)


def test_a_method_gets_lr_and_weight_decay_plus_only_what_it_declares():
    assert set(build_schedules((), _ctx(20)).at(0)) == {"lr", "weight_decay"}
    assert set(build_schedules(("momentum", "teacher_temp"), _ctx(20)).at(0)) == {
        "lr", "weight_decay", "momentum", "teacher_temp"}
    with pytest.raises(ValueError, match="unknown schedule 'mask_ratio'"):
        build_schedules(("mask_ratio",), _ctx(20))
