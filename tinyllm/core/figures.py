"""The insides of a GPT as matplotlib figures (``tinyllm.core.insides`` computes the numbers).

Figures are built with matplotlib's object API (``Figure``), never pyplot: no GUI
backend and no global state, so the same code serves ``inspect``, the
TensorBoard callback and the notebook.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import Tensor

from tinyllm.core.insides import CacheCost, LogitLens, RopeCurves
from tinyllm.core.tokenizers import Tokenizer


def token_labels(pieces: list[str]) -> list[str]:
    """Tokens as axis labels: whitespace made visible (⏎ for a newline, ␣ for a space)."""
    return [p.replace("\n", "⏎").replace(" ", "␣") or "∅" for p in pieces]


def labels_of(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """Axis labels for token ``ids``: each token decoded on its own, whitespace made visible."""
    return token_labels([tokenizer.decode([int(i)]) for i in ids])


def attention_grid(maps: Tensor, labels: list[str], title: str = "") -> Figure:
    """One panel per (layer, head): row i is how query token i spreads its attention over keys 0..i.

    Dark is 0, bright is 1; above the diagonal is the future, masked to exactly 0.
    """
    n_layer, n_head, t, _ = maps.shape
    show_tokens = t <= 80  # beyond that a label per token is unreadable at any sensible size
    size = max(1.8, 0.065 * t) if show_tokens else 1.8  # inches per panel: ~5 pt per token row
    fig = Figure(figsize=(size * n_head + 1.2, size * n_layer + 0.8), layout="constrained")
    axes = fig.subplots(n_layer, n_head, squeeze=False)
    for layer in range(n_layer):
        for head in range(n_head):
            ax = axes[layer][head]
            image = ax.imshow(maps[layer, head].numpy(), cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if show_tokens and layer == n_layer - 1:  # keys along the bottom row
                ax.set_xticks(range(t), labels, rotation=90, fontsize=5, fontfamily="monospace")
            if show_tokens and head == 0:  # queries down the left column
                ax.set_yticks(range(t), labels, fontsize=5, fontfamily="monospace")
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=9)
            if head == 0:
                ax.set_ylabel(f"layer {layer}\nquery ↓", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    fig.suptitle(title or "attention: rows are queries, columns the keys they see (causal: nothing above the diagonal)",
                 fontsize=10)  # fmt: skip
    return fig


def logit_lens_figure(lens: LogitLens, labels: list[str], tokenizer: Tokenizer | None = None) -> Figure:
    """Layers × positions: the probability each layer's read-out gives the true next token,
    annotated (for short prompts, given the ``tokenizer``) with that layer's top guess."""
    p = lens.true_next.numpy()  # (L, T-1)
    n_layer, t = p.shape
    fig = Figure(figsize=(max(6.0, 0.3 * t + 3), 0.5 * n_layer + 2.4))
    ax = fig.subplots()
    image = ax.imshow(p, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(n_layer), [f"after block {i}" for i in range(n_layer)])
    ax.set_xticks(range(t), [f"{a}→{b}" for a, b in zip(labels[:-1], labels[1:])], rotation=90, fontsize=6,
                  fontfamily="monospace")  # fmt: skip
    if tokenizer is not None and t <= 64:
        for layer in range(n_layer):
            guesses = labels_of(tokenizer, lens.probs[layer, :-1].argmax(-1).tolist())
            for pos in range(t):
                ax.text(pos, layer, guesses[pos], ha="center", va="center", fontsize=6,
                        color="white" if p[layer, pos] < 0.5 else "black", fontfamily="monospace")  # fmt: skip
    ax.set_xlabel("position: current token → the true next token (text in a cell: that layer's top guess)")
    ax.set_title("logit lens: P(true next token) read out after each block through the final norm and head")
    fig.colorbar(image, ax=ax, label="probability of the true next token")
    fig.tight_layout()
    return fig


def rope_figure(curves: RopeCurves) -> Figure:
    """Left: the mean q·k of random vectors against distance (RoPE's decay). Middle: trained q·k of a few
    query/key pairs. Right: the same pairs rotated from another start position: the curves coincide."""
    random_scores, trained_scores, shifted, shift = curves.random, curves.trained, curves.moved, curves.start
    distances = torch.arange(random_scores.size(-1))
    fig = Figure(figsize=(14, 3.8))
    ax_random, ax_trained, ax_shift = fig.subplots(1, 3)
    ax_random.plot(distances, random_scores.mean(0) / random_scores[:, 0].mean(), color="tab:blue")
    ax_random.set(title="random q = k: mean score vs distance", xlabel="distance (tokens)",
                  ylabel="q·k relative to distance 0")  # fmt: skip
    for i in range(min(4, trained_scores.size(0))):
        ax_trained.plot(distances, trained_scores[i], lw=1, label=f"pair {i}")
        ax_shift.plot(distances, shifted[i], lw=1, ls="--", label=f"pair {i}")
    ax_trained.set(title="trained q, k (layer 0) from position 0", xlabel="distance (tokens)", ylabel="q·k")
    ax_shift.set(title=f"the same pairs from position {shift}: identical curves", xlabel="distance (tokens)",
                 ylabel="q·k")  # fmt: skip
    for ax in (ax_random, ax_trained, ax_shift):
        ax.grid(alpha=0.3)
    ax_trained.legend(fontsize=7)
    fig.suptitle("RoPE: the attention score depends on the distance between tokens only")
    fig.tight_layout()
    return fig


def cache_figure(cost: CacheCost) -> Figure:
    """Left: the KV cache's bytes as the generation grows. Right: time per token with and without it."""
    fig = Figure(figsize=(11, 3.8))
    ax_bytes, ax_time = fig.subplots(1, 2)
    ax_bytes.plot(cost.tokens, [b / 1024 for b in cost.cache_bytes], color="tab:purple")
    ax_bytes.set(title="what the cache holds: keys and values of every layer", xlabel="tokens generated",
                 ylabel="KV cache (KiB)")  # fmt: skip
    ax_time.plot(cost.tokens, [s * 1e3 for s in cost.seconds_recomputed], label="recompute the whole window")
    ax_time.plot(cost.tokens, [s * 1e3 for s in cost.seconds_cached], label="KV cache: one new token")
    ax_time.set(title="time per new token", xlabel="tokens generated", ylabel="ms per token")
    ax_time.set_ylim(bottom=0)
    ax_time.legend()
    for ax in (ax_bytes, ax_time):
        ax.grid(alpha=0.3)
    speedup = sum(cost.seconds_recomputed) / max(sum(cost.seconds_cached), 1e-9)
    fig.suptitle(f"KV cache: {len(cost.tokens)} new tokens, {speedup:.1f}x faster than recomputing, "
                 f"{cost.cache_bytes[-1] / 1024:.0f} KiB at the end")  # fmt: skip
    fig.tight_layout()
    return fig

