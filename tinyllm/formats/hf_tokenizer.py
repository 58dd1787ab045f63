"""Hugging Face tokenizer files (``tokenizer.json``) that give exactly tinyllm's token ids."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from tinyllm.core.tokenizers import EOT, BPETokenizer, CharTokenizer, GPT2Tokenizer, Tokenizer, read_ranks
from tinyllm.errors import TinyLLMError
from tinyllm.files import gpt2_ranks_path


@cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map (Radford et al., 2019; openai/gpt-2 encoder.py).

    Printable Latin-1 bytes map to themselves; the other 68 bytes to chr(256 + n),
    so every byte sequence becomes a string without spaces or control characters.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, n = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


def byte_level_text(b: bytes) -> str:
    """``b`` as GPT-2's byte-level string: one printable character per byte."""
    table = _bytes_to_unicode()
    return "".join(table[x] for x in b)


def gpt2_vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Hugging Face BPE vocabulary and merges reconstructed from tiktoken's ranks.

    tiktoken stores only ranks: token bytes → id, where id = merge order. The
    merge that created the token of rank r is found by running BPE on its bytes
    with the merges of rank < r only: that leaves exactly two parts. GPT-2 has
    50,000 merges (ranks 256…50255); each is listed once, in rank order, which
    is what Hugging Face's BPE applies by priority.
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best = min(
                (ranks.get(parts[i] + parts[i + 1], math.inf), i) for i in range(len(parts) - 1)
            )
            if best[0] >= rank:
                break
            i = best[1]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 2 or parts[0] + parts[1] != token:
            raise TinyLLMError(f"the GPT-2 ranks file is inconsistent at rank {rank}: re-download gpt2.tiktoken")
        merges.append((byte_level_text(parts[0]), byte_level_text(parts[1])))
    vocab = {byte_level_text(token): rank for token, rank in ranks.items()}
    return vocab, merges


PROBE_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?  It's the east...\n\n"
    "  1604 -- naïve café, 東京 ☃ we'll they're\t\ttabs\r\n   "
)


def hf_tokenizer(tokenizer: Tokenizer, data_dir: str | Path | None = None):
    """A ``tokenizers.Tokenizer`` that gives the same ids as ``tokenizer`` (checked on a probe text).

    char: a WordLevel model over the characters, after a pre-tokenizer that
    isolates every character; the decoder joins them back without spaces. A
    character outside the vocabulary is an error, as in tinyllm.
    gpt2: byte-level BPE with GPT-2's pre-tokenization regex, its merges rebuilt
    from tiktoken's ranks, and ``<|endoftext|>`` = 50256 as the special token.
    bpe: the tokenizer.json it was trained as, unchanged (the same vocabulary,
    merges, pre-tokenizer and special token; ``save`` writes it pretty-printed).
    """
    if isinstance(tokenizer, CharTokenizer):
        hf = HFTokenizer(models.WordLevel(vocab={ch: i for i, ch in enumerate(tokenizer.chars)}, unk_token="<unk>"))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = decoders.Fuse()
        probe = tokenizer.chars + "".join(ch for ch in PROBE_TEXT if ch in tokenizer.chars)
    elif isinstance(tokenizer, GPT2Tokenizer):
        vocab, merges = gpt2_vocab_and_merges(read_ranks(gpt2_ranks_path(data_dir)))
        vocab[EOT] = GPT2Tokenizer.eot_id
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        hf.post_processor = processors.ByteLevel(trim_offsets=False)
        hf.add_special_tokens([AddedToken(EOT, special=True)])
        probe = PROBE_TEXT
    elif isinstance(tokenizer, BPETokenizer):
        hf = HFTokenizer.from_str(tokenizer.to_json())
        probe = PROBE_TEXT
    else:
        raise TinyLLMError(f"cannot export a {tokenizer.name!r} tokenizer: only char, gpt2 and bpe are supported")
    ours, theirs = tokenizer.encode(probe), hf.encode(probe, add_special_tokens=False).ids
    if ours != theirs or hf.decode(theirs) != probe:
        raise TinyLLMError(f"the Hugging Face {tokenizer.name} tokenizer disagrees with tinyllm's; please report this")
    return hf


def tokenizer_config(tokenizer: Tokenizer, block_size: int) -> dict[str, Any]:
    """tokenizer_config.json: load tokenizer.json as it is (PreTrainedTokenizerFast), no spaces cleaned up."""
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,
    }
    if isinstance(tokenizer, (GPT2Tokenizer, BPETokenizer)):  # byte-level BPE: <|endoftext|> is every role
        cfg.update(bos_token=EOT, eos_token=EOT, unk_token=EOT, add_bos_token=False,
                   added_tokens_decoder={str(tokenizer.eot_id): {"content": EOT, "lstrip": False, "normalized": False,
                                                                 "rstrip": False, "single_word": False,
                                                                 "special": True}})  # fmt: skip
    return cfg

