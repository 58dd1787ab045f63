"""Shared model helpers: tiny random models whose outputs are far from uniform, fixed token ids, logits.

A freshly initialised GPT (weights ~N(0, 0.02)) has near-uniform logits, so greedy
decoding would be decided by float noise. ``sharp_model`` re-draws every weight
matrix with a much larger std: logits then spread over several units, attention
is far from uniform, and the next token depends on the whole context.
"""

from __future__ import annotations

import torch

from tinyllm.core.config import GPTConfig
from tinyllm.core.model import GPT

PRESET_NAMES = ["vanilla", "modern", "vanilla+rmsnorm", "vanilla+swiglu", "vanilla+rope"]
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=11, dropout=0.0)


def logits(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids)


def some_ids(vocab_size: int, length: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(7))


def sharp_model(name: str = "modern", seed: int = 0, std: float = 0.3, **overrides) -> GPT:
    """A tiny random model whose logits are far from uniform (see the module docstring)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig.preset(name, **{**TINY, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:  # every Linear / Embedding matrix; norm gains and biases stay as they are
                p.normal_(0.0, std)
    return model


def prompt_tensor(b: int, t: int, vocab: int = TINY["vocab_size"], seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, t), generator=g)
