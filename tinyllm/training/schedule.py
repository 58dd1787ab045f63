"""Learning-rate schedules: the LR multiplier as a function of how far the run is.

A run's length is a number of optimizer steps (``max_steps``), a time budget
(``max_time``), or both; ``progress`` is the fraction of it used after warmup,
0 → 1, whichever ends first. Two shapes decay over it:

* **cosine** (Loshchilov & Hutter, 2017, arXiv:1608.03983, without restarts):
  m = r + (1 - r) · ½ (1 + cos(π · progress)).
* **wsd**, warmup-stable-decay (Hu et al., 2024, MiniCPM, arXiv:2404.06395):
  the peak LR until the last ``decay_fraction`` of the run, then a linear decay
  to r. Its decay starts late, so a run cut short by its budget loses less.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Shape = Literal["cosine", "wsd"]


def lr_multiplier(
    step: int, warmup_steps: int, progress: float, min_ratio: float, shape: Shape = "cosine", decay_fraction: float = 0.2
) -> float:
    """The LR multiplier at optimizer ``step``: linear warmup to 1 over ``warmup_steps``, then ``shape`` down to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(1.0, max(0.0, progress))
    if shape == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    stable = 1.0 - decay_fraction
    if p <= stable:
        return 1.0
    return min_ratio + (1.0 - min_ratio) * (1.0 - (p - stable) / decay_fraction)


def step_progress(step: int, warmup_steps: int, max_steps: int) -> float:
    """The fraction of the steps after warmup that are done (0 when there is no step limit)."""
    if max_steps < 1:
        return 0.0
    return min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))


def step_schedule(
    step: int, warmup_steps: int, max_steps: int, min_ratio: float, shape: Shape = "cosine", decay_fraction: float = 0.2
) -> float:
    """A step-defined run's multiplier: warmup, then ``shape`` from 1 at ``warmup_steps`` to ``min_ratio`` at ``max_steps``."""
    return lr_multiplier(step, warmup_steps, step_progress(step, warmup_steps, max_steps), min_ratio, shape,
                         decay_fraction)  # fmt: skip


def make_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, min_ratio: float, shape: Shape = "cosine",
    decay_fraction: float = 0.2,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then ``shape`` down to ``min_ratio`` of the peak LR over ``max_steps``, stepped once per
    optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: step_schedule(step, warmup_steps, max_steps, min_ratio, shape, decay_fraction)
    )
