"""Faster paths for particular devices, beside the model: each computes the function ``model.py`` writes out.

``model.py`` is the lesson and states every formula once; what a device needs
to run it fast lives here, measured, so the classes there stay readable.

* **Dropout on a CPU** draws its mask with ``torch.rand``: ``nn.Dropout``'s
  ``bernoulli_`` made attention-weight dropout the slowest op of a 6×384 step,
  and this is 2.4× faster there, backward included (DEVLOG.md, bf16 on the CPU,
  2-core AMD EPYC Zen 5). Other devices keep torch's fused kernel.
* **Fused attention** (torch's ``scaled_dot_product_attention``) computes
  softmax(QKᵀ/√D + M)V without forming the T×S matrix, except in bf16 on a
  CPU, where torch 2.13's fused kernel is slow, its backward most: forward and
  backward took 3.9× the formula's time at 4×128 (T 128, D 32) and 2× at
  6×384 (T 256, D 64); in fp32 the fused kernel wins (same DEVLOG entry).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """y = x · keep / (1 - p), keep ~ Bernoulli(1 - p), in training; x otherwise."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    keep = torch.rand(x.shape, device=x.device) >= p
    return x * (keep * (1.0 / (1.0 - p))).to(x.dtype)


def fused_attention_is_slow(q: Tensor) -> bool:
    """True in bf16 on a CPU, where the formula's two matmuls beat torch's fused kernel.

    Under bf16 autocast q is bf16: the projections make it so, and RoPE keeps its dtype.
    """
    return q.device.type == "cpu" and q.dtype == torch.bfloat16


def fused_attention(q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> Tensor:
    """softmax(QKᵀ/√D + M)V for (B, H, T, D) queries against (B, H, S, D) keys/values, causally masked."""
    t, s = q.size(2), k.size(2)
    if t == s:  # no cache, or prefill into an empty one: plain lower triangle
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    # Cached decoding: the new queries see every cached key plus the new ones before them; one new token sees all.
    mask = None if t == 1 else torch.ones(t, s, dtype=torch.bool, device=q.device).tril(diagonal=s - t)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
