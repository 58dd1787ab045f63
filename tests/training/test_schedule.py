"""tinyllm.training.schedule: the learning-rate multiplier, step by step."""

from __future__ import annotations

import math

import pytest
import torch

from tinyllm.training.schedule import lr_multiplier, make_scheduler, step_progress, step_schedule


def test_warmup_is_linear_and_reaches_the_peak():
    assert [step_schedule(s, 4, 100, 0.1) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_goes_from_peak_to_min_ratio_through_the_midpoint():
    w, total, r = 10, 110, 0.1
    assert step_schedule(w, w, total, r) == pytest.approx(1.0)
    assert step_schedule(w + 50, w, total, r) == pytest.approx(r + (1 - r) * 0.5)  # cos(π/2) = 0
    assert step_schedule(total, w, total, r) == pytest.approx(r)
    assert step_schedule(total + 500, w, total, r) == pytest.approx(r)  # past the end it stays at the floor
    decay = [step_schedule(s, w, total, r) for s in range(w, total + 1)]
    assert decay == sorted(decay, reverse=True)


def test_no_warmup_and_constant_schedule():
    assert step_schedule(0, 0, 100, 0.5) == 1.0
    assert all(step_schedule(s, 0, 100, 1.0) == pytest.approx(1.0) for s in range(0, 200, 7))


def test_scheduler_steps_the_optimizer_learning_rate():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = make_scheduler(opt, warmup_steps=2, max_steps=6, min_ratio=0.1)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [2.0 * step_schedule(s, 2, 6, 0.1) for s in range(8)]
    assert lrs == pytest.approx(expected)
    assert lrs[1] == pytest.approx(2.0) and lrs[-1] == pytest.approx(0.2) and not math.isnan(lrs[-1])


def test_wsd_is_flat_then_linear_to_the_floor():
    r, d = 0.1, 0.25
    assert lr_multiplier(0, 0, 0.0, r, "wsd", d) == 1.0
    assert lr_multiplier(50, 0, 0.75, r, "wsd", d) == 1.0  # the decay starts at 1 - d
    assert lr_multiplier(50, 0, 0.875, r, "wsd", d) == pytest.approx(r + (1 - r) * 0.5)
    assert lr_multiplier(50, 0, 1.0, r, "wsd", d) == pytest.approx(r)
    assert lr_multiplier(50, 0, 7.0, r, "wsd", d) == pytest.approx(r)  # past the end: the floor
    assert lr_multiplier(2, 4, 0.99, r, "wsd", d) == 0.75  # warmup comes first, whatever the progress


def test_a_step_defined_wsd_decays_over_its_last_fraction_of_steps():
    r, d = 0.1, 0.25  # warmup 10, then 200 steps: flat to step 160, linear to the floor at step 210
    assert step_schedule(160, 10, 210, r, "wsd", d) == 1.0
    assert step_schedule(185, 10, 210, r, "wsd", d) == pytest.approx(r + (1 - r) * 0.5)
    assert step_schedule(210, 10, 210, r, "wsd", d) == pytest.approx(r)


def test_step_progress_ignores_a_missing_step_limit():
    assert step_progress(10, 0, -1) == 0.0
    assert step_progress(60, 10, 110) == 0.5


def test_a_step_defined_run_keeps_the_exact_old_schedule():
    # The cosine of tinyllm before time budgets, written out: resumed step-defined runs must not move by one ulp.
    def old(step, w, s, r):
        if step < w:
            return (step + 1) / w
        p = min(1.0, (step - w) / max(1, s - w))
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))

    for step in range(0, 130):
        assert step_schedule(step, 10, 120, 0.1) == old(step, 10, 120, 0.1)


def test_the_module_follows_whichever_of_steps_and_time_is_further(monkeypatch: pytest.MonkeyPatch):
    from types import SimpleNamespace

    from tinyllm.core.config import GPTConfig
    from tinyllm.training.module import GPTLitModule

    lit = GPTLitModule(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8), lr=1e-3, min_lr=1e-4, warmup_steps=0,
                       schedule="wsd", decay_fraction=0.5)  # fmt: skip
    monkeypatch.setattr(GPTLitModule, "trainer", SimpleNamespace(max_steps=100), raising=False)
    assert lit.lr_multiplier(50) == 1.0  # half the steps: still flat
    lit.time_progress = 0.75  # three quarters of the time budget used: halfway down the decay
    assert lit.lr_multiplier(50) == pytest.approx(0.1 + 0.9 * 0.5)
    monkeypatch.setattr(GPTLitModule, "trainer", SimpleNamespace(max_steps=-1), raising=False)
    assert lit.lr_multiplier(50) == pytest.approx(0.55)  # a time-only run


def test_scheduler_follows_the_runs_own_shape():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_scheduler(opt, warmup_steps=0, max_steps=10, min_ratio=0.1, shape="wsd", decay_fraction=0.3)
    lrs = []
    for _ in range(11):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:8] == [1.0] * 8  # stable for the first 70%
    assert lrs[8:] == pytest.approx([1 - 0.9 / 3, 1 - 1.8 / 3, 0.1])  # then linear down to min_ratio
