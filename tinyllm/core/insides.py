"""What a GPT computes inside, as numbers a picture can show: attention weights, the logit lens,
RoPE's score against distance, and what the KV cache holds.

Nothing here changes the model or slows it: attention weights are recorded only
inside :func:`recording_attention`, and it and the logit lens read the model
through ordinary forward hooks, removed afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from tinyllm.core.generate import generate_tokens
from tinyllm.core.model import GPT, CausalSelfAttention, RotaryEmbedding


@dataclass
class AttentionRecord:
    """One attention layer's weights (B, H, T, S) from the last forward inside :func:`recording_attention`."""

    weights: Tensor | None = None


@contextmanager
def recording_attention(model: GPT) -> Iterator[list[AttentionRecord]]:
    """Within the block, every attention layer's weights softmax(QKᵀ/√D + M) land in a record, one per layer.

    A fused (``sdpa``) layer runs the formula meanwhile, since the fused kernel
    never forms the matrix; its output is the same function. Afterwards each
    layer has its kernel back and no hook.
    """
    layers = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    records = [AttentionRecord() for _ in layers]
    kernels = [layer.kernel for layer in layers]
    hooks = []
    for layer, record in zip(layers, records):
        layer.kernel = "manual"
        hooks.append(layer.scores.register_forward_hook(
            lambda module, args, out, record=record: setattr(record, "weights", out.detach())))  # fmt: skip
    try:
        yield records
    finally:
        for layer, kernel, hook in zip(layers, kernels, hooks):
            layer.kernel = kernel
            hook.remove()


@contextmanager
def evaluating(model: GPT) -> Iterator[torch.device]:
    """Eval mode and no gradients for the block, the model's own mode restored after (so a training run
    can look inside between steps); yields the device to put inputs on.

    A model compiled for training runs eagerly here: these one-off calls (a sample token by token, a
    prompt's attention) would each compile new graphs, seconds of a time budget, for a few milliseconds' work.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.compiler.set_stance("force_eager"):
            yield next(model.parameters()).device
    finally:
        model.train(was_training)


def attention_maps(model: GPT, ids: list[int]) -> Tensor:
    """(L, H, T, T) causal attention weights of every layer and head over the prompt ``ids``."""
    with evaluating(model) as device, recording_attention(model) as records:
        model(torch.tensor([ids], device=device))
        return torch.stack([record.weights[0] for record in records]).float().cpu()


@dataclass
class LogitLens:
    """What each layer's residual stream predicts (nostalgebraist, 2020: "interpreting GPT: the logit lens").

    probs: (L, T, V) softmax of ``lm_head(norm(h_l))`` for the residual stream h_l after block l.
    true_next: (L, T-1) the probability each layer gives the token that actually comes next.
    """

    probs: Tensor
    true_next: Tensor


def logit_lens(model: GPT, ids: list[int]) -> LogitLens:
    """Push each block's output through the final norm and the head, as if the model ended there."""
    streams: list[Tensor] = []
    hooks = [layer.register_forward_hook(lambda _m, _in, out: streams.append(out)) for layer in model.layers]
    try:
        with evaluating(model) as device:
            model(torch.tensor([ids], device=device))
            logits = torch.stack([model.head(h)[0] for h in streams]).float()  # (L, T, V)
    finally:
        for h in hooks:
            h.remove()
    probs = logits.softmax(-1).cpu()
    targets = torch.tensor(ids[1:])
    true_next = probs[:, :-1].gather(-1, targets.expand(probs.size(0), -1)[..., None])[..., 0]
    return LogitLens(probs, true_next)


def rope_scores(rope: RotaryEmbedding, q: Tensor, k: Tensor, distances: int, start: int = 0) -> Tensor:
    """q·k after rotating q to position start + d and k to position start, for d = 0..distances-1.

    ``q``, ``k``: (N, D) pairs of vectors. Returns (N, distances). RoPE makes the
    result the same for every ``start``: the score depends on the distance only.
    """
    d = torch.arange(distances)
    cos_q, sin_q = rope.angles(start + d)  # (distances, D/2)
    cos_k, sin_k = rope.angles(torch.full_like(d, start))
    q_rot = RotaryEmbedding.rotate(q[:, None, :], cos_q, sin_q)  # (N, distances, D)
    k_rot = RotaryEmbedding.rotate(k[:, None, :], cos_k, sin_k)
    return (q_rot * k_rot).sum(-1)


def trained_query_keys(model: GPT, ids: list[int], layer: int = 0) -> tuple[Tensor, Tensor]:
    """The un-rotated queries and keys (T·H, D) that layer ``layer`` computes for the prompt."""
    streams: list[Tensor] = []
    block = model.layers[layer]
    hook = block.input_norm.register_forward_hook(lambda _m, _in, out: streams.append(out))
    try:
        with evaluating(model) as device:
            model(torch.tensor([ids], device=device))
            h = streams[0][0]  # (T, C): what attention reads
            attn = block.self_attn
            q = attn.q_proj(h).view(-1, attn.n_head, attn.head_dim).reshape(-1, attn.head_dim)
            k = attn.k_proj(h).view(-1, attn.n_head, attn.head_dim).reshape(-1, attn.head_dim)
    finally:
        hook.remove()
    return q.float().cpu(), k.float().cpu()


@dataclass
class RopeCurves:
    """q·k against distance: random q = k (N, D'), a few trained pairs from position 0, and the same pairs
    rotated from ``start`` on (identical to the previous, up to rounding)."""

    random: Tensor
    trained: Tensor
    moved: Tensor
    start: int


def rope_curves(model: GPT, ids: list[int], pairs: int = 4, samples: int = 512) -> RopeCurves:
    """RoPE's score against distance for a model with RoPE, over half its context."""
    if model.rope is None:
        raise ValueError("the model has learned positions, not RoPE")
    distances = model.config.block_size // 2
    q = torch.randn(samples, model.config.head_dim, generator=torch.Generator().manual_seed(0))
    tq, tk = trained_query_keys(model, ids)
    tq, tk = tq[:pairs], tk[:pairs]
    start = model.config.block_size - distances  # as far along as the context allows
    return RopeCurves(rope_scores(model.rope, q, q, distances), rope_scores(model.rope, tq, tk, distances),
                      rope_scores(model.rope, tq, tk, distances, start=start), start)  # fmt: skip


@dataclass
class CacheCost:
    """Per generated token n (1..N): the KV cache's size and the time to produce it, with and without the cache."""

    tokens: list[int]
    cache_bytes: list[int]
    seconds_cached: list[float]
    seconds_recomputed: list[float]


def kv_cache_bytes(model: GPT, length: int, batch_size: int = 1) -> int:
    """Keys and values of every layer for ``length`` tokens: 2 · L · length · C elements."""
    c = model.config
    itemsize = next(model.parameters()).element_size()
    return 2 * c.n_layer * batch_size * length * c.n_embd * itemsize


def _token_times(model: GPT, prompt: Tensor, n: int, kv_cache: bool, repeats: int) -> list[float]:
    """Seconds per generated token; each token's fastest of ``repeats`` runs (one-off stalls filtered out)."""
    best = [float("inf")] * n
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i, _token in enumerate(generate_tokens(model, prompt, n, temperature=0.0, kv_cache=kv_cache)):
            now = time.perf_counter()
            best[i], t0 = min(best[i], now - t0), now
    return best


def cache_cost(model: GPT, ids: list[int], new_tokens: int, repeats: int = 3) -> CacheCost:
    """Generate ``new_tokens`` greedily after ``ids``, timing each token with the cache and by recomputing."""
    with evaluating(model) as device:
        prompt = torch.tensor([ids], device=device)
        cached = _token_times(model, prompt, new_tokens, True, repeats)
        recomputed = _token_times(model, prompt, new_tokens, False, repeats)
    lengths = [len(ids) + n for n in range(1, new_tokens + 1)]
    cache_bytes = [kv_cache_bytes(model, min(t, model.config.block_size)) for t in lengths]
    return CacheCost(list(range(1, new_tokens + 1)), cache_bytes, cached, recomputed)
