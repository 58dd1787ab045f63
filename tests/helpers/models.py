"""Shared model helpers: tiny random models whose outputs are far from uniform, fixed token ids, logits.

A freshly initialised GPT (weights ~N(0, 0.02)) has near-uniform logits, so greedy
decoding would be decided by float noise. ``sharp_model`` re-draws every weight
matrix with a much larger std: logits then spread over several units, attention
is far from uniform, and the next token depends on the whole context.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from tinyllm.commands.runs import CONFIGS
from tinyllm.commands.experiment import VARIANTS
from tinyllm.core.config import GPTConfig
from tinyllm.core.model import GPT

PRESET_NAMES = ["vanilla", "modern", "vanilla+rmsnorm", "vanilla+swiglu", "vanilla+rope"]  # swap variants
# The 2025 switches, each on modern (zero_init only changes the starting point, so it is left out here).
NEW_ERA_NAMES = ["modern+relu2", "modern+qk_norm", "modern+untied", "modern+value_embeds",
                 "modern+residual_scalars", "modern+softcap"]  # fmt: skip


def _arch_of_file(path: Path) -> dict[str, Any]:
    recipe = yaml.safe_load(path.read_text())
    base = _arch_of_file(path.parent / recipe["config"]) if "config" in recipe else {}
    return {**base, **((recipe.get("model") or {}).get("arch") or {})}


def recipe_arch(name: str, **overrides: Any) -> GPTConfig:
    """The architecture of a swap variant (``vanilla``, ``vanilla+rope``, ``modern``…), read from configs/ and the
    experiment's deltas, as ``experiment swaps`` builds it; ``overrides`` on top."""
    base, delta = VARIANTS[name]
    arch = _arch_of_file(CONFIGS / base)
    for flag in delta:
        if flag.startswith("--model.arch."):
            key, value = flag.removeprefix("--model.arch.").split("=", 1)
            arch[key] = yaml.safe_load(value)
    return GPTConfig(**{**arch, **overrides})


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside, and put back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=11, dropout=0.0)


def logits(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids)


def some_ids(vocab_size: int, length: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(7))


def sharp_model(name: str = "modern", seed: int = 0, std: float = 0.3, **overrides) -> GPT:
    """A tiny random model whose logits are far from uniform (see the module docstring)."""
    torch.manual_seed(seed)
    model = GPT(recipe_arch(name, **{**TINY, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:  # every Linear / Embedding matrix; norm gains and biases stay as they are
                p.normal_(0.0, std)
    return model


def prompt_tensor(b: int, t: int, vocab: int = TINY["vocab_size"], seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, t), generator=g)
