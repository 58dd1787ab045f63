"""tinyllm.training.schedule: the learning-rate multiplier, step by step."""

from __future__ import annotations

import math

import pytest

from tinyllm.core.config import GPTConfig
from tinyllm.training.module import GPTLitModule
from tinyllm.training.schedule import Schedule


def cosine(warmup: int, max_steps: int, r: float) -> Schedule:
    return Schedule(warmup, r, "cosine", max_steps=max_steps)


def test_warmup_is_linear_and_reaches_the_peak():
    assert [cosine(4, 100, 0.1)(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_goes_from_peak_to_min_ratio_through_the_midpoint():
    w, total, r = 10, 110, 0.1
    m = cosine(w, total, r)
    assert m(w) == pytest.approx(1.0)
    assert m(w + 50) == pytest.approx(r + (1 - r) * 0.5)  # cos(π/2) = 0
    assert m(total) == pytest.approx(r)
    assert m(total + 500) == pytest.approx(r)  # past the end it stays at the floor
    decay = [m(s) for s in range(w, total + 1)]
    assert decay == sorted(decay, reverse=True)


def test_no_warmup_and_constant_schedule():
    assert cosine(0, 100, 0.5)(0) == 1.0
    assert all(cosine(0, 100, 1.0)(s) == pytest.approx(1.0) for s in range(0, 200, 7))


def test_wsd_is_flat_then_linear_to_the_floor_over_the_time_used():
    r, d = 0.1, 0.25
    m = Schedule(0, r, "wsd", d)  # no step limit: only the time budget moves it
    assert m(0, 0.0) == 1.0
    assert m(50, 0.75) == 1.0  # the decay starts at 1 - d
    assert m(50, 0.875) == pytest.approx(r + (1 - r) * 0.5)
    assert m(50, 1.0) == pytest.approx(r)
    assert m(50, 7.0) == pytest.approx(r)  # past the end: the floor
    assert Schedule(4, r, "wsd", d)(2, 0.99) == 0.75  # warmup comes first, whatever the progress


def test_a_step_defined_wsd_decays_over_its_last_fraction_of_steps():
    r, d = 0.1, 0.25  # warmup 10, then 200 steps: flat to step 160, linear to the floor at step 210
    m = Schedule(10, r, "wsd", d, max_steps=210)
    assert m(160) == 1.0
    assert m(185) == pytest.approx(r + (1 - r) * 0.5)
    assert m(210) == pytest.approx(r)


def test_progress_is_the_larger_of_steps_and_time_and_ignores_a_missing_step_limit():
    assert Schedule(0, 0.1).progress(10) == 0.0
    assert Schedule(10, 0.1, max_steps=110).progress(60) == 0.5
    assert Schedule(10, 0.1, max_steps=110).progress(60, time_used=0.8) == 0.8
    assert Schedule(10, 0.1, max_steps=110).progress(100, time_used=0.2) == pytest.approx(0.9)


def test_a_step_defined_run_keeps_the_exact_old_schedule():
    # The cosine of tinyllm before time budgets, written out: resumed step-defined runs must not move by one ulp.
    def old(step, w, s, r):
        if step < w:
            return (step + 1) / w
        p = min(1.0, (step - w) / max(1, s - w))
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))

    for step in range(0, 130):
        assert cosine(10, 120, 0.1)(step) == old(step, 10, 120, 0.1)


class FakeClock:
    """A BudgetClock whose share of the budget the test sets."""

    def __init__(self) -> None:
        self.share = 0.0

    def share_used(self) -> float:
        return self.share


def lrs_of(optimizers: dict, steps: int, clock: FakeClock | None = None, shares: list[float] | None = None) -> list[float]:
    opt, sched = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    lrs = []
    for i in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        if clock is not None and shares is not None:
            clock.share = shares[i]
        opt.step()
        sched.step()
    return lrs


def tiny_module(**kwargs) -> GPTLitModule:
    return GPTLitModule(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8), **kwargs)


def test_the_modules_scheduler_steps_the_learning_rate_of_a_step_defined_run():
    lit = tiny_module(lr=2.0, min_lr=0.2, warmup_steps=2)
    lrs = lrs_of(lit.optimizers_for(max_steps=6), 8)
    assert lrs == pytest.approx([2.0 * cosine(2, 6, 0.1)(s) for s in range(8)])
    assert lrs[1] == pytest.approx(2.0) and lrs[-1] == pytest.approx(0.2)


def test_the_module_follows_whichever_of_steps_and_time_is_further():
    lit = tiny_module(lr=1.0, min_lr=0.1, warmup_steps=0, schedule="wsd", decay_fraction=0.5)
    clock = FakeClock()
    # 100 steps, but the clock says three quarters of the time budget went by after step 2: halfway down the decay.
    lrs = lrs_of(lit.optimizers_for(max_steps=100, clock=clock), 4, clock, [0.0, 0.0, 0.75, 0.75])
    assert lrs[:3] == [1.0, 1.0, 1.0] and lrs[3] == pytest.approx(0.1 + 0.9 * 0.5)
    clock = FakeClock()  # a time-only run: no step limit, the clock alone decides
    lrs = lrs_of(lit.optimizers_for(max_steps=-1, clock=clock), 3, clock, [0.0, 1.0, 1.0])
    assert lrs == pytest.approx([1.0, 1.0, 0.1])


def test_the_scheduler_follows_the_runs_own_shape():
    lit = tiny_module(lr=1.0, min_lr=0.1, warmup_steps=0, schedule="wsd", decay_fraction=0.3)
    lrs = lrs_of(lit.optimizers_for(max_steps=10), 11)
    assert lrs[:8] == [1.0] * 8  # stable for the first 70%
    assert lrs[8:] == pytest.approx([1 - 0.9 / 3, 1 - 1.8 / 3, 0.1])  # then linear down to min_ratio
