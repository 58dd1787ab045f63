"""A small trained byte-level BPE, and a tiny model + checkpoint that use it (no Lightning fit needed).

``small_bpe()`` trains bpe:300 on the first 60 KB of Tiny Shakespeare plus a few lines of non-ASCII text (so
some merges join the bytes of one character); it takes ~0.1 s and is cached per process.
``bpe_checkpoint()`` writes a checkpoint dict shaped like a ``tinyllm fit`` one (``state_dict`` with the
``model.`` prefix, ``hyper_parameters`` holding the arch and the tokenizer state), loaded by the same code.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from tests.helpers.models import sharp_model
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import BPETokenizer, train_bpe
from tinyllm.files import SHAKESPEARE

UNICODE_LINES = ["naïve café, Ünïcödé — 東京 ☃ 😀👍🏽\n", "déjà vu, señor, Ελληνικά, 日本語のテキスト\n"] * 150


def shakespeare_head(n_chars: int = 60_000) -> str:
    data_dir = Path(os.environ["TINYLLM_DATA_DIR"])
    return (data_dir / SHAKESPEARE.name).read_text(encoding="utf-8")[:n_chars]


@functools.cache
def small_bpe(vocab_size: int = 300) -> BPETokenizer:
    """bpe:``vocab_size`` trained on Shakespeare's first 60 KB (line by line) and ``UNICODE_LINES``."""
    return train_bpe([*shakespeare_head().splitlines(keepends=True), *UNICODE_LINES], vocab_size)


def bpe_model(tokenizer: BPETokenizer, seed: int = 0, pad_to: int | None = None, **overrides) -> GPT:
    """A tiny LLaMA-shaped GPT (sharp logits) whose vocabulary is ``tokenizer``'s, or ``pad_to`` rows."""
    return sharp_model("modern", seed=seed, vocab_size=pad_to or tokenizer.vocab_size, **overrides)


def bpe_checkpoint(path: Path, model: GPT, tokenizer: BPETokenizer, step: int = 4) -> Path:
    """Save ``model`` and ``tokenizer`` as a tinyllm checkpoint at ``path`` (plain types: weights_only loads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"arch": model.config.to_dict(), "tokenizer": tokenizer.state()},
            "global_step": step,
        },
        path,
    )
    return path
