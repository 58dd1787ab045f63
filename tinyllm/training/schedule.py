"""The learning-rate schedule: a multiplier of the peak LR as a function of how far the run is.

A run's length is a number of optimizer steps (``max_steps``), a time budget
(``max_time``), or both; progress is the fraction of it used after warmup,
0 → 1, whichever ends first. Two shapes decay over it:

* **cosine** (Loshchilov & Hutter, 2017, arXiv:1608.03983, without restarts):
  m = r + (1 - r) · ½ (1 + cos(π · progress)).
* **wsd**, warmup-stable-decay (Hu et al., 2024, MiniCPM, arXiv:2404.06395):
  the peak LR until the last ``decay_fraction`` of the run, then a linear decay
  to r. Its decay starts late, so a run cut short by its budget loses less.

The steps come from the optimizer step count; the share of a time budget used
comes from a :class:`BudgetClock` (the ``TimeBudget`` callback is one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Shape = Literal["cosine", "wsd"]


@runtime_checkable
class BudgetClock(Protocol):
    """Whatever knows how much of a time budget a run has used (0 without a budget)."""

    def share_used(self) -> float: ...


@dataclass(frozen=True)
class Schedule:
    """Linear warmup to the peak over ``warmup_steps``, then ``shape`` down to ``min_ratio`` of it.

    ``max_steps < 1`` means no step limit: only the time budget's share moves the decay.
    """

    warmup_steps: int
    min_ratio: float
    shape: Shape = "cosine"
    decay_fraction: float = 0.2
    max_steps: int = -1

    def progress(self, step: int, time_used: float = 0.0) -> float:
        """How far the run is after warmup, 0 → 1: the larger of the steps done and the time budget used."""
        by_steps = 0.0
        if self.max_steps >= 1:
            by_steps = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
        return min(1.0, max(0.0, by_steps, time_used))

    def __call__(self, step: int, time_used: float = 0.0) -> float:
        """The LR multiplier at optimizer ``step``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        p, r = self.progress(step, time_used), self.min_ratio
        if self.shape == "cosine":
            return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))
        stable = 1.0 - self.decay_fraction
        if p <= stable:
            return 1.0
        return r + (1.0 - r) * (1.0 - (p - stable) / self.decay_fraction)
