"""Tests for tinyllm.core.tokenizers: characters and GPT-2 BPE, round trips, states, unknown characters."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import one_line_error
from tinyllm.core.tokenizers import CharTokenizer, GPT2Tokenizer, tokenizer_from_state
from tinyllm.errors import TinyLLMError


def test_char_tokenizer_round_trips_whole_corpus(corpus: str):
    tok = CharTokenizer.from_text(corpus)
    assert tok.vocab_size == 65
    assert tok.chars == "".join(sorted(set(corpus)))
    ids = tok.encode(corpus)
    assert len(ids) == len(corpus)
    assert min(ids) == 0 and max(ids) == 64
    assert tok.decode(ids) == corpus


GPT2_TEXTS = [
    "Hello world",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "naïve café — Ünïcödé, 日本語のテキスト, Ελληνικά, עברית",
    "emoji 🤖🎭👩‍👩‍👧‍👦 and flags 🇬🇧 and skin tones 👍🏽",
    "   leading spaces, \t tabs,\n\n\nblank lines and trailing   \n",
    "  \r\n \u00a0 \u2003 \u200b",
    "<|endoftext|> typed in a prompt is just characters",
    "numbers 1234567890 3.14159 and 'contractions' don't we'll they're",
    "",
]


@pytest.mark.parametrize("text", GPT2_TEXTS)
def test_gpt2_round_trips_varied_text(gpt2: GPT2Tokenizer, text: str):
    ids = gpt2.encode(text)
    assert all(isinstance(i, int) and 0 <= i < 50256 for i in ids)  # never the special EOT id
    assert gpt2.decode(ids) == text
    assert gpt2.decode_bytes(ids) == text.encode("utf-8")


def test_gpt2_known_encoding(gpt2: GPT2Tokenizer):
    assert gpt2.vocab_size == 50257
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.decode([15496, 995]) == "Hello world"
    assert gpt2.encode(" world") == [995]


def _is_plain(value) -> bool:
    if value is None or type(value) in (str, int, float, bool):
        return True
    if type(value) in (list, tuple):
        return all(_is_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v) for k, v in value.items())
    return False


SAMPLE = "ROMEO:\nBut, soft! what light through yonder window breaks?\n"


@pytest.mark.parametrize("kind", ["char", "gpt2"])
def test_tokenizer_state_round_trip(data_dir: Path, corpus: str, gpt2: GPT2Tokenizer, kind: str):
    tok = CharTokenizer.from_text(corpus) if kind == "char" else gpt2
    state = tok.state()
    assert state["kind"] == kind
    assert _is_plain(state), state

    buf = io.BytesIO()
    torch.save({"tokenizer": state}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["tokenizer"]
    assert loaded == state

    rebuilt = tokenizer_from_state(loaded)
    assert type(rebuilt) is type(tok)
    assert rebuilt.name == tok.name and rebuilt.vocab_size == tok.vocab_size
    assert rebuilt.state() == state
    assert rebuilt.encode(SAMPLE) == tok.encode(SAMPLE)
    assert rebuilt.decode(tok.encode(SAMPLE)) == SAMPLE
    if kind == "char":
        assert rebuilt.chars == tok.chars
        assert rebuilt.encode(corpus) == tok.encode(corpus)


@pytest.mark.parametrize("state", [{"kind": "bpe"}, {}, None, "char"])
def test_tokenizer_from_unknown_state_raises(state):
    with pytest.raises(TinyLLMError) as e:
        tokenizer_from_state(state)
    assert "char" in one_line_error(e) and "gpt2" in str(e.value)


def test_char_tokenizer_names_each_unknown_character():
    tok = CharTokenizer.from_text("abc ")
    assert tok.encode("a cab") == [1, 0, 3, 1, 2]
    with pytest.raises(TinyLLMError) as e:
        tok.encode("abc X ba Y é 🙂 X")
    msg = one_line_error(e)
    for ch in "XYé🙂":
        assert ch in msg, f"{ch!r} missing from {msg!r}"
    assert "4" in msg  # the vocabulary size


def test_char_tokenizer_unknown_newline_keeps_message_on_one_line():
    tok = CharTokenizer.from_text("ab")
    with pytest.raises(TinyLLMError) as e:
        tok.encode("a\nb\tb")
    msg = one_line_error(e)
    assert "\\n" in msg and "\\t" in msg  # named, escaped


def test_char_tokenizer_rejects_bad_vocabulary():
    with pytest.raises(TinyLLMError):
        CharTokenizer("")
    with pytest.raises(TinyLLMError):
        CharTokenizer("abca")
