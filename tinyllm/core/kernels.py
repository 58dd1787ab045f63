"""Faster paths for particular devices, beside the model: each computes the function ``model.py`` writes out.

``model.py`` is the lesson and states every formula once; what a device needs
to run it fast lives here, measured, so the classes there stay readable.

* **Dropout on a CPU** draws its mask as bytes, eight from each 64-bit number
  of torch's CPU generator. That generator makes one number at a time on one
  core: ``nn.Dropout``'s ``bernoulli_`` made attention-weight dropout the
  slowest op of a 6×384 step, ``torch.rand`` (one 32-bit draw per element) was
  still a quarter of the step on a 2-core Xeon, and 16-bit draws a tenth
  (DEVLOG.md). The drop probability is p rounded to a multiple of 2⁻⁸, as in
  FlashAttention's CUDA kernels, which compare 8-bit numbers too. The draw is a
  custom operator (``tinyllm::fill_dropout_mask_``), which ``torch.compile``
  calls as it is: given ``F.dropout``, Inductor draws every number with a scalar
  call of its own, and a compiled step of the 6×384 model with dropout 0.3 took
  2.5 times as long as one without dropout. Other devices keep torch's fused
  kernel.
* **An embedding's gradient** is torch's own kernel, called as it is when
  compiled. Inductor's CPU code adds each token's gradient row into the table
  with atomic adds from every thread, so rows of a token that repeats were
  summed in another order each step: a compiled step's gradients, and so its
  runs and resumes, differed from one process to the next (DEVLOG.md).
* **Fused attention** (torch's ``scaled_dot_product_attention``) computes
  softmax(QKᵀ/√D + M)V without forming the T×S matrix, except in bf16 on a
  CPU, where torch 2.13's fused kernel is slow, its backward most: forward and
  backward took 3.9× the formula's time at 4×128 (T 128, D 32) and 2× at
  6×384 (T 256, D 64); in fp32 the fused kernel wins (same DEVLOG entry), unless
  it trains with dropout, which it leaves to a slower fallback.
* **The threads' first op** is a throwaway one. On a 2-core Xeon VM with AMX,
  the first op torch split over two threads computed the second thread's share
  wrong in a few processes in a hundred (RoPE's cos table, off by up to
  1.5e-4, so the whole run took other bits); every later op was right. An
  elementwise op split over every thread takes that first share (DEVLOG.md).
* **Freed memory kept** (glibc): a training step's activations are freed and
  allocated again every step, and glibc by default hands blocks of that size
  back to the OS, so each step faulted in fresh zeroed pages.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


_threads_warmed: tuple[int, int] = (0, 0)  # (process, thread count) warm_up_threads last ran in


def warm_up_threads() -> None:
    """Run one throwaway op on every CPU intra-op thread, once per process and thread count, before any result
    that counts. (Whether a new thread count brings the fault back was not measured: warming again is cheap.)"""
    global _threads_warmed
    pid, threads = os.getpid(), torch.get_num_threads()  # a forked child has threads of its own
    if threads > 1 and (pid, threads) != _threads_warmed:
        # On the CPU whatever the default device (a model first built on "meta" warms nothing), and 64 K
        # elements a thread: more than any op's grain, so torch splits it over all of them.
        torch.ones(threads * 65_536, device="cpu").cos()
        _threads_warmed = (pid, threads)


def _random_bytes(shape: torch.Size) -> Tensor:
    """Independent uniform integers in [0, 256) (uint8) of ``shape``, eight per 64-bit draw."""
    n = shape.numel()
    words = torch.empty((n + 7) // 8, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits of each word
    return words.view(torch.uint8)[:n].view(shape)


# Defining the operator registers it with torch's dispatcher under the name below (no other work at import).
# It fills a buffer in place rather than returning a new tensor: two calls with the same shape would otherwise be
# one expression to the compiler, which merges them (one mask for every dropout of that shape). And it takes the
# tensor that the mask is for: a draw that depends on nothing could run anywhere in a compiled graph, and the
# compiler ordered such draws differently from one process to the next, so runs (and resumes) differed. That
# orders a draw after its own input only; the model's draws are in one order because each dropout's input
# depends on the one before. The compiler does not know the op is random: torch's default partitioner never
# recomputes it for the backward, but an activation memory budget below 1 would allow that (tinyllm sets none).
# The mask leaves the op in x's dtype, not as bytes or booleans: Inductor's CPU code reads a random boolean
# tensor about 7× slower than a bf16 one (its loads branch on the data), and with the bytes themselves its
# kernels loaded 8 of them at a time through a copy (a compiled step took 0.76 s against 0.41 s).
@torch.library.custom_op("tinyllm::fill_dropout_mask_", mutates_args=("out",), device_types="cpu")
def fill_dropout_mask_(out: Tensor, after: Tensor, drop: int) -> None:
    """Fill ``out`` with keep = 0 (probability drop / 256, 0 < drop < 256) or 1, from torch's CPU generator,
    once ``after`` is computed (only its place in the computation is used)."""
    # In out's dtype in one call: 1.5x as fast as a boolean mask converted after.
    torch.ge(_random_bytes(out.shape), drop, out=out)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """y = x · keep / (1 - p), keep ~ Bernoulli(1 - p), in training; x otherwise. On a CPU p is rounded to a
    multiple of 2⁻⁸ (below 2⁻⁹ that is 0: no dropout), and the scale is the rounded p's, so that E[y] = x still."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    drop = round(p * 256)
    if drop == 0:
        return x
    if drop == 256:  # every element dropped: no byte is below 256
        return x * 0.0
    keep = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    fill_dropout_mask_(keep, x, drop)
    # The scale is a separate product: compiled, it joins the kernels that read the mask, forward and backward,
    # at no cost, where scaling the mask itself took one more pass over it.
    return x * keep * (256 / (256 - drop))


# The gradient as an operator of its own, so that the compiler calls it as it is instead of its own code.
@torch.library.custom_op("tinyllm::embedding_backward", mutates_args=())
def embedding_backward(grad: Tensor, idx: Tensor, num_embeddings: int) -> Tensor:
    """dL/dW (num_embeddings, C) of y = W[idx]: each table row sums the ``grad`` rows of its tokens, in token order."""
    return torch.ops.aten.embedding_dense_backward(grad, idx, num_embeddings, -1, False)


@embedding_backward.register_fake
def _(grad: Tensor, idx: Tensor, num_embeddings: int) -> Tensor:
    return grad.new_empty(num_embeddings, grad.size(-1))


class _Lookup(torch.autograd.Function):
    """y = W[idx], with :func:`embedding_backward` as its gradient."""

    @staticmethod
    def forward(idx: Tensor, weight: Tensor) -> Tensor:
        return F.embedding(idx, weight)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
        idx, weight = inputs
        ctx.save_for_backward(idx)
        ctx.num_embeddings = weight.size(0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        (idx,) = ctx.saved_tensors
        return None, embedding_backward(grad.contiguous(), idx, ctx.num_embeddings)


def embedding(idx: Tensor, weight: Tensor) -> Tensor:
    """y = W[idx]: row idx of the table for every index, and a gradient summed in the same order every time.

    On every device: Inductor's GPU code adds the rows atomically too. Measured on a CPU only."""
    if not (torch.is_grad_enabled() and weight.requires_grad):
        return F.embedding(idx, weight)  # no gradient to take: generation looks rows up as it always did
    return _Lookup.apply(idx, weight)


def fused_attention_is_slow(q: Tensor, dropout_p: float) -> bool:
    """True on a CPU in bf16 or with dropout, where the formula beats torch's fused kernel.

    Under bf16 autocast q is bf16: the projections make it so, and RoPE keeps its dtype. With dropout
    the fused CPU kernel does not run at all: torch falls back to its own formula, which forms the T×S
    weights too and draws their mask with ``bernoulli_`` (a step of the 6×384 model in fp32 with dropout
    0.3 took 1.51 s that way against 1.26 s with the formula and :func:`dropout`, DEVLOG.md).
    """
    return q.device.type == "cpu" and (q.dtype == torch.bfloat16 or dropout_p > 0)


def fused_attention(q: Tensor, k: Tensor, v: Tensor, dropout_p: float, mask: Tensor) -> Tensor:
    """softmax(QKᵀ/√D + M)V for (B, H, T, D) queries against (B, H, S, D) keys/values; ``mask`` is M (T, S)."""
    t, s = q.size(2), k.size(2)
    if t == s:  # no cache, or prefill into an empty one: M is the lower triangle, which the kernel knows
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    # Cached: one new token sees every key (no mask needed); several need M's rows, in q's dtype.
    attn_mask = None if t == 1 else mask.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


# glibc's mallopt parameters (malloc.h), and the largest mmap threshold it accepts on a 64-bit system.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 2**20


def reuse_freed_memory() -> bool:
    """Keep freed blocks of up to 32 MB for the process to reuse, rather than return them to the OS (glibc only).

    By default glibc maps each block from 128 KB up (a threshold that rises with the blocks freed) to pages
    of its own and unmaps them on free, so every training step's activations fault in fresh zeroed pages:
    a compiled step of the 6×384 model took 0.489-0.525 s that way against 0.459-0.485 s with them kept
    (DEVLOG.md). With the threshold at its maximum and no trimming, the heap keeps them; the memory stays
    with the process, and its peak rose a few percent.
    Returns False where the C library is not glibc (macOS, musl), which is left as it is.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
