"""Learning-rate schedules: the LR multiplier as a function of training progress."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1 over ``warmup_steps``, then cosine down to ``min_ratio`` at ``max_steps``.

        m(s) = (s + 1) / W                                      for s < W
        m(s) = r + (1 - r) · ½ (1 + cos(π · (s - W) / (S - W)))   after, clamped at s = S

    (Loshchilov & Hutter, 2017, arXiv:1608.03983, without restarts.)
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, min_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then cosine decay to ``min_ratio`` of the peak LR, stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, max_steps, min_ratio)
    )
