"""tinyllm.training.schedule: the learning-rate multiplier, step by step."""

from __future__ import annotations

import math

import pytest
import torch

from tinyllm.training.schedule import make_scheduler, warmup_cosine


def test_warmup_is_linear_and_reaches_the_peak():
    assert [warmup_cosine(s, 4, 100, 0.1) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_goes_from_peak_to_min_ratio_through_the_midpoint():
    w, total, r = 10, 110, 0.1
    assert warmup_cosine(w, w, total, r) == pytest.approx(1.0)
    assert warmup_cosine(w + 50, w, total, r) == pytest.approx(r + (1 - r) * 0.5)  # cos(π/2) = 0
    assert warmup_cosine(total, w, total, r) == pytest.approx(r)
    assert warmup_cosine(total + 500, w, total, r) == pytest.approx(r)  # past the end it stays at the floor
    decay = [warmup_cosine(s, w, total, r) for s in range(w, total + 1)]
    assert decay == sorted(decay, reverse=True)


def test_no_warmup_and_constant_schedule():
    assert warmup_cosine(0, 0, 100, 0.5) == 1.0
    assert all(warmup_cosine(s, 0, 100, 1.0) == pytest.approx(1.0) for s in range(0, 200, 7))


def test_scheduler_steps_the_optimizer_learning_rate():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = make_scheduler(opt, warmup_steps=2, max_steps=6, min_ratio=0.1)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [2.0 * warmup_cosine(s, 2, 6, 0.1) for s in range(8)]
    assert lrs == pytest.approx(expected)
    assert lrs[1] == pytest.approx(2.0) and lrs[-1] == pytest.approx(0.2) and not math.isnan(lrs[-1])
