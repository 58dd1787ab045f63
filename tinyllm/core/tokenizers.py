"""Tokenizers: characters, GPT-2's byte-pair encoding through tiktoken, or a byte-level BPE trained on your corpus.

A tokenizer describes itself with ``state()``, a small dict of plain types that
is stored in every checkpoint, so a checkpoint alone can encode prompts and
decode samples. ``tokenizer_from_state`` builds it back.

``eot_id`` is the id of the end-of-text token that separates documents, or None
where the vocabulary has none (char).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tiktoken
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from tinyllm.errors import TinyLLMError
from tinyllm.files import gpt2_ranks_path


class Tokenizer(Protocol):
    name: str  # the kind: char, gpt2 or bpe
    spec: str  # what --data.tokenizer makes it from: char, gpt2 or bpe:N
    vocab_size: int
    eot_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def state(self) -> dict[str, Any]: ...


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters in the corpus."""

    name = spec = "char"
    eot_id = None  # no end-of-text token: the vocabulary is the corpus's characters only

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


EOT = "<|endoftext|>"
REBUILD = "train it again (or re-export the model)"  # a damaged tokenizer in a checkpoint or exported folder
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

    name = spec = "gpt2"
    vocab_size = 50257
    eot_id = 50256

    def __init__(self, ranks_path: str | Path) -> None:
        self._enc = tiktoken.Encoding(
            name="gpt2",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=read_ranks(ranks_path),
            special_tokens={EOT: self.eot_id},
            explicit_n_vocab=self.vocab_size,
        )

    def encode(self, text: str) -> list[int]:
        # Ordinary text only: "<|endoftext|>" typed in a prompt is just characters.
        return self._enc.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(ids)

    def state(self) -> dict[str, Any]:
        return {"kind": "gpt2"}


class BPETokenizer:
    """Byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant) of N tokens trained on the user's corpus
    with Hugging Face tokenizers.

    GPT-2's scheme with a vocabulary of your size: the text's UTF-8 bytes (all 256 are tokens, so any text
    encodes), split first by GPT-2's pre-tokenization regex, then merged by the merges learned on your corpus.
    ``<|endoftext|>`` is a special token (``eot_id``) that separates documents; typed in a text it is ordinary
    characters. The whole tokenizer is one ``tokenizer.json`` text, which is its state.
    """

    name = "bpe"

    def __init__(self, tokenizer_json: str, fix: str = REBUILD) -> None:
        try:
            hf = HFTokenizer.from_str(tokenizer_json)
        except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
            raise TinyLLMError(
                f"the stored BPE tokenizer is not a readable tokenizer.json ({str(e).splitlines()[0][:100]}): {fix}"
            ) from None
        if not isinstance(hf.model, models.BPE):
            raise TinyLLMError(f"the stored tokenizer is a {type(hf.model).__name__}, not a BPE: {fix}")
        eot_id = hf.token_to_id(EOT)
        if eot_id is None:
            raise TinyLLMError(f"the stored BPE tokenizer has no {EOT} token: {fix}")
        hf.encode_special_tokens = True  # "<|endoftext|>" in a text is characters, never the separator
        self._hf, self._json = hf, tokenizer_json
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
        self.spec = f"bpe:{self.vocab_size}"
        self.eot_id: int = eot_id
        self._encode_batch = getattr(hf, "encode_batch_fast", hf.encode_batch)  # no offsets: faster (newer tokenizers)

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """``encode`` of each text, in parallel on all cores (Rust threads; the GIL is released)."""
        return [e.ids for e in self._encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``; ``eot_id`` reads as ``<|endoftext|>``.

        A sequence that ends inside a multi-byte character ends in U+FFFD (streaming decodes such prefixes and
        strips it). Ids outside the vocabulary decode to nothing, as in Hugging Face.
        """
        return self._hf.decode(list(ids), skip_special_tokens=False)

    def state(self) -> dict[str, Any]:
        return {"kind": "bpe", "tokenizer_json": self._json}

    def to_json(self) -> str:
        """The Hugging Face ``tokenizer.json`` text."""
        return self._json

    def merge_parents(self) -> np.ndarray:
        """(vocab_size, 2) int64: the two tokens that each token's merge joined; (-1, -1) for a byte or a special."""
        model = json.loads(self._json)["model"]
        vocab = model["vocab"]
        parents = np.full((self.vocab_size, 2), -1, dtype=np.int64)
        for merge in model["merges"]:
            left, right = merge.split(" ", 1) if isinstance(merge, str) else merge  # older files: "a b"
            parents[vocab[left + right]] = vocab[left], vocab[right]
        return parents


def unmerge(ids: np.ndarray, parents: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """BPE-dropout on tokens already encoded: each token is split back into the two its merge joined with
    probability ``p``, and each of those again with probability ``p``, down to bytes.

    BPE-dropout (Provilkov et al. 2020, "BPE-Dropout: Simple and Effective Subword Regularization") skips each
    merge with probability p while a word is encoded, so the model sees the same text cut in many ways and a
    small corpus lasts longer. Undoing finished merges gives a subset of those cuttings (the canonical one
    and its refinements), from the encoded stream in a few vectorised passes, and from a seeded ``rng``, so
    a segmentation can be drawn again. A merged token stays whole with probability 1 − p, and falls apart into
    its n bytes with probability p^(n−1). The text is unchanged: decoding the result gives the same bytes.
    """
    fresh = np.ones(len(ids), dtype=bool)  # the tokens that may still split: all, then each split's halves
    while True:
        split = fresh & (parents[ids, 0] >= 0) & (rng.random(len(ids)) < p)
        if not split.any():
            return ids
        width = 1 + split  # a split token becomes two
        first = (np.cumsum(width) - width)[split]  # where its left half lands
        out = np.repeat(ids, width)
        out[first], out[first + 1] = parents[ids[split], 0], parents[ids[split], 1]
        fresh = np.zeros(len(out), dtype=bool)
        fresh[first] = fresh[first + 1] = True
        ids = out


MIN_BPE_VOCAB = 256 + 1  # every byte, and <|endoftext|>


LONG_WORD = 1000  # characters without a space; the trainer's time grows with the square of a word's length
_LONG_RUN = re.compile(rf"(?<!\S)\S{{{LONG_WORD + 1},}}")  # from a run's start only: linear, not quadratic


def short_words(text: str) -> Iterator[str]:
    """``text`` for the BPE trainer: a run of more than LONG_WORD non-space characters (a base64 blob, minified
    code) cut into pieces of LONG_WORD, each counted on its own. Prose is given whole, so its merges are the same.

    Hugging Face's trainer took 1.5 s for one 100,000-letter word and 5.9 s for 200,000.
    """
    start = 0
    for run in _LONG_RUN.finditer(text):
        for cut in range(run.start() + LONG_WORD, run.end(), LONG_WORD):
            yield text[start:cut]
            start = cut
    yield text[start:]


def train_bpe(texts: Iterable[str], vocab_size: int) -> BPETokenizer:
    """A byte-level BPE of ``vocab_size`` tokens (``<|endoftext|>`` included) learned from ``texts``.

    Hugging Face's trainer runs in Rust on all cores. ``texts`` is consumed once, as an iterator: memory holds
    the table of distinct pre-tokenized words and their counts, not the corpus. Each text is pre-tokenized on
    its own, so give documents or lines, not fixed-size slices that cut words. The result depends only on the
    texts (not their order, nor the number of cores): training twice gives the same tokenizer.json.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_BPE_VOCAB:
        raise TinyLLMError(
            f"a byte-level BPE needs at least {MIN_BPE_VOCAB} tokens (256 bytes + {EOT}), not {vocab_size!r}: "
            f"ask for bpe:{MIN_BPE_VOCAB} or more"
        )
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)  # GPT-2's split regex
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = processors.ByteLevel(trim_offsets=False)  # adds nothing; keeps offsets as GPT-2's
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = [0]

    def counted(items: Iterable[str]) -> Iterator[str]:
        for text in items:
            seen[0] += len(text)
            yield from short_words(text)

    hf.train_from_iterator(counted([texts] if isinstance(texts, str) else texts), trainer)
    if seen[0] == 0:
        raise TinyLLMError("the corpus is empty: a BPE tokenizer needs some text to learn its merges from")
    trained = hf.get_vocab_size(with_added_tokens=True)
    if trained < vocab_size:
        raise TinyLLMError(f"the text supports only {trained} tokens, ask for bpe:{trained} or fewer")
    return BPETokenizer(hf.to_str())


def tokenizer_from_state(state: dict[str, Any], data_dir: str | Path | None = None, fix: str = REBUILD) -> Tokenizer:
    """Rebuild the tokenizer a checkpoint, an exported folder or a prepared dataset stored.

    ``fix`` is what the error of a damaged ``state`` tells the user to do (the store knows, the tokenizer does not).
    """
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == "char":
        chars = state.get("chars")
        if not isinstance(chars, str) or not chars:
            raise TinyLLMError(f"the stored character tokenizer has no characters: {fix}")
        return CharTokenizer(chars)
    if kind == "gpt2":
        return GPT2Tokenizer(gpt2_ranks_path(data_dir))
    if kind == "bpe":
        if not isinstance(state.get("tokenizer_json"), str):
            raise TinyLLMError(f"the stored BPE tokenizer has no tokenizer_json: {fix}")
        return BPETokenizer(state["tokenizer_json"], fix)
    raise TinyLLMError(f"unknown tokenizer {state!r}, expected kind 'char', 'gpt2' or 'bpe': {fix}")


def stored_vocab_size(state: dict[str, Any], fix: str = REBUILD) -> int:
    """The ids of the tokenizer ``state`` describes (GPT-2's is fixed: its ranks file is not needed to know it)."""
    if isinstance(state, dict) and state.get("kind") == "gpt2":
        return GPT2Tokenizer.vocab_size
    return tokenizer_from_state(state, fix=fix).vocab_size


def parse_tokenizer_spec(spec: str) -> str | int:
    """'char', 'gpt2', or the N of 'bpe:N' (a byte-level BPE of N tokens)."""
    if spec in ("char", "gpt2"):
        return spec
    m = re.fullmatch(r"bpe:(\d+)", str(spec).strip())
    if m is None:
        raise TinyLLMError(f"tokenizer {spec!r} is not one of char, gpt2, bpe:N (N = vocabulary size, e.g. bpe:1024)")
    n = int(m.group(1))
    if n < MIN_BPE_VOCAB:
        raise TinyLLMError(f"tokenizer {spec}: a byte-level BPE needs at least {MIN_BPE_VOCAB} tokens (256 bytes + "
                           f"{EOT}): ask for bpe:{MIN_BPE_VOCAB} or more")  # fmt: skip
    return n


def stored_spec(state: dict[str, Any]) -> str | None:
    """The spec (char, gpt2, bpe:N) of a stored tokenizer state, without reading GPT-2's ranks file."""
    kind = state.get("kind")
    return tokenizer_from_state(state).spec if kind == "bpe" else kind


def build_tokenizer(
    kind: str, text: str, data_dir: str | Path | None = None, train_text: str | None = None
) -> Tokenizer:
    """A fresh tokenizer of ``kind`` ('char', 'gpt2' or 'bpe:N') for the corpus ``text``.

    A BPE learns its merges from ``train_text`` (the training split) when given, so that the validation
    text is as new to the tokenizer as to the model.
    """
    spec = parse_tokenizer_spec(kind)
    if spec == "char":
        return CharTokenizer.from_text(text)
    if spec == "gpt2":
        return tokenizer_from_state({"kind": "gpt2"}, data_dir)
    return train_bpe(text if train_text is None else train_text, spec)
