"""Tokenizers: characters, or GPT-2's byte-pair encoding through tiktoken.

A tokenizer describes itself with ``state()``, a small dict of plain types that
is stored in every checkpoint, so a checkpoint alone can encode prompts and
decode samples. ``tokenizer_from_state`` builds it back.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Protocol

import tiktoken

from tinyllm.errors import TinyLLMError
from tinyllm.files import gpt2_ranks_path


class Tokenizer(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def state(self) -> dict[str, Any]: ...


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters in the corpus."""

    name = "char"

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars) or not chars:
            raise TinyLLMError("a character vocabulary needs distinct characters and at least one")
        self.chars = chars
        self.vocab_size = len(chars)
        self._ids = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[ch] for ch in text]
        except KeyError:
            unknown = sorted({ch for ch in text if ch not in self._ids})
            raise TinyLLMError(
                f"characters {''.join(unknown)!r} are not in this model's vocabulary of "
                f"{self.vocab_size} characters; remove or replace them"
            ) from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def state(self) -> dict[str, Any]:
        return {"kind": "char", "chars": self.chars}


GPT2_EOT = "<|endoftext|>"
# GPT-2's pre-tokenization regex (tiktoken's faster equivalent of the original).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def read_ranks(path: str | Path) -> dict[bytes, int]:
    """A tiktoken ranks file (one ``base64(token) rank`` a line) as {token bytes: rank}."""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


class GPT2Tokenizer:
    """GPT-2's byte-level BPE (Radford et al., 2019): 50,256 merges + ``<|endoftext|>`` = 50,257 ids.

    Encoding runs in tiktoken; the ranks file is found by ``tinyllm.files.gpt2_ranks_path``.
    """

    name = "gpt2"
    vocab_size = 50257

    def __init__(self, ranks_path: str | Path) -> None:
        self._enc = tiktoken.Encoding(
            name="gpt2",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=read_ranks(ranks_path),
            special_tokens={GPT2_EOT: 50256},
            explicit_n_vocab=self.vocab_size,
        )

    def encode(self, text: str) -> list[int]:
        # Ordinary text only: "<|endoftext|>" typed in a prompt is just characters.
        return self._enc.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(ids)

    def decode_bytes(self, ids: list[int]) -> bytes:
        """Raw bytes, for streaming: one token may hold half of a multi-byte character."""
        return self._enc.decode_bytes(ids)

    def state(self) -> dict[str, Any]:
        return {"kind": "gpt2"}


def tokenizer_from_state(state: dict[str, Any], data_dir: str | Path | None = None) -> Tokenizer:
    """Rebuild the tokenizer a checkpoint was trained with."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == "char":
        return CharTokenizer(state["chars"])
    if kind == "gpt2":
        return GPT2Tokenizer(gpt2_ranks_path(data_dir))
    raise TinyLLMError(f"unknown tokenizer {state!r} in checkpoint; expected kind 'char' or 'gpt2'")


def build_tokenizer(kind: str, text: str, data_dir: str | Path | None = None) -> Tokenizer:
    """A fresh tokenizer of ``kind`` ('char' or 'gpt2') for the corpus ``text``."""
    if kind == "char":
        return CharTokenizer.from_text(text)
    return tokenizer_from_state({"kind": kind}, data_dir)
