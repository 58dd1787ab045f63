"""Tests for tinyllm.core.tokenizers: characters, GPT-2 BPE and trained BPE; round trips, states, errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.bpe import UNICODE_LINES, shakespeare_head, small_bpe
from tests.helpers.cli import one_line_error
from tinyllm.core.generate import _Streamer
from tinyllm.core.tokenizers import (EOT, LONG_WORD, BPETokenizer, CharTokenizer, GPT2Tokenizer, tokenizer_from_state,
                                     train_bpe, unmerge)
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


def test_gpt2_known_encoding(gpt2: GPT2Tokenizer):
    assert gpt2.vocab_size == 50257 and gpt2.eot_id == 50256
    assert gpt2.decode([50256]) == EOT
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


@pytest.mark.parametrize("kind", ["char", "gpt2", "bpe"])
def test_tokenizer_state_round_trip(data_dir: Path, corpus: str, gpt2: GPT2Tokenizer, kind: str):
    tok = {"char": lambda: CharTokenizer.from_text(corpus), "gpt2": lambda: gpt2, "bpe": small_bpe}[kind]()
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
    assert rebuilt.eot_id == tok.eot_id
    if kind == "char":
        assert rebuilt.chars == tok.chars
        assert rebuilt.encode(corpus) == tok.encode(corpus)


@pytest.mark.parametrize("state", [{"kind": "sentencepiece"}, {}, None, "char"])
def test_tokenizer_from_unknown_state_raises(state):
    with pytest.raises(TinyLLMError) as e:
        tokenizer_from_state(state)
    assert "char" in one_line_error(e) and "gpt2" in str(e.value) and "bpe" in str(e.value)


@pytest.mark.parametrize("state", [{"kind": "bpe"}, {"kind": "bpe", "tokenizer_json": "{not json"},
                                   {"kind": "bpe", "tokenizer_json": '{"model": {"type": "WordLevel"}}'}])  # fmt: skip
def test_tokenizer_from_broken_bpe_state_raises_one_line(state):
    with pytest.raises(TinyLLMError) as e:
        tokenizer_from_state(state)
    assert "BPE" in one_line_error(e)


def test_bpe_state_of_another_model_or_without_end_of_text_is_refused():
    import json

    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    with pytest.raises(TinyLLMError, match="WordLevel, not a BPE"):
        BPETokenizer(HFTokenizer(models.WordLevel({EOT: 0, "a": 1}, unk_token=EOT)).to_str())
    doc = json.loads(small_bpe().to_json())
    doc["added_tokens"] = []
    del doc["model"]["vocab"][EOT]
    with pytest.raises(TinyLLMError, match="<\\|endoftext\\|>"):
        BPETokenizer(json.dumps(doc))


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


def test_char_tokenizer_has_no_end_of_text_token():
    assert CharTokenizer("ab").eot_id is None


# ----------------------------------------------------------------------------- trained byte-level BPE


def test_bpe_has_the_asked_vocabulary_with_end_of_text_special():
    tok = small_bpe()
    assert tok.name == "bpe" and tok.vocab_size == 300
    assert isinstance(tok.eot_id, int) and 0 <= tok.eot_id < 300
    assert tok.decode([tok.eot_id]) == EOT
    # documents joined by eot_id decode to the texts around the separator
    assert tok.decode([*tok.encode("To be"), tok.eot_id, *tok.encode("or not")]) == f"To be{EOT}or not"


@pytest.mark.parametrize("text", GPT2_TEXTS)
def test_bpe_round_trips_varied_text(text: str):
    tok = small_bpe()
    ids = tok.encode(text)
    assert all(type(i) is int and 0 <= i < tok.vocab_size and i != tok.eot_id for i in ids)
    assert tok.decode(ids) == text


def test_bpe_learned_merges_compress_its_corpus():
    tok, text = small_bpe(), shakespeare_head()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < 0.75 * len(text.encode("utf-8"))  # only 43 merges, yet ~1.4 bytes a token on Shakespeare
    assert len(tok.encode("café")) < len("café".encode("utf-8"))  # "é"'s two bytes were merged (UNICODE_LINES)


def test_bpe_typed_end_of_text_is_ordinary_characters():
    tok = small_bpe()
    for text in [EOT, f" {EOT}", f"a{EOT}b\n{EOT}\n"]:
        ids = tok.encode(text)
        assert tok.eot_id not in ids and tok.decode(ids) == text
    assert tok.encode(f"x {EOT} y") == tok.encode("x ") + tok.encode(f"{EOT} y")  # same as text without specials


def test_bpe_encode_batch_equals_encode():
    tok = small_bpe()
    texts = [*GPT2_TEXTS, shakespeare_head(5000), f"keep {EOT} as text"]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_batch([]) == []


def test_train_bpe_is_deterministic_and_order_free():
    lines = [*shakespeare_head(20_000).splitlines(keepends=True), *UNICODE_LINES]
    a = train_bpe(iter(lines), 400)
    assert train_bpe(iter(lines), 400).to_json() == a.to_json()
    assert train_bpe(reversed(lines), 400).to_json() == a.to_json()  # word counts are a sum: order does not matter
    assert a.state() == {"kind": "bpe", "tokenizer_json": a.to_json()}
    assert train_bpe("".join(lines), 400).vocab_size == 400  # one str is one text, not an iterable of characters


@pytest.mark.parametrize("size", [0, 256, -1, 300.0, True])
def test_train_bpe_refuses_a_vocabulary_below_the_bytes(size):
    with pytest.raises(TinyLLMError) as e:
        train_bpe(["some text"], size)
    assert "bpe:257" in one_line_error(e)


def test_train_bpe_accepts_exactly_bytes_plus_end_of_text():
    tok = train_bpe(["hello world\n"], 257)
    assert tok.vocab_size == 257 and tok.decode(tok.encode("héllo ☃")) == "héllo ☃"


def test_train_bpe_says_how_many_tokens_the_text_supports():
    with pytest.raises(TinyLLMError) as e:
        train_bpe(["abab abab\n"] * 10, 5000)
    msg = one_line_error(e)
    supported = int(msg.split("only ")[1].split()[0])
    assert 257 < supported < 5000 and f"ask for bpe:{supported} or fewer" in msg
    assert train_bpe(["abab abab\n"] * 10, supported).vocab_size == supported


@pytest.mark.parametrize("texts", [[], [""], iter(["", ""])])
def test_train_bpe_refuses_an_empty_corpus(texts):
    with pytest.raises(TinyLLMError) as e:
        train_bpe(texts, 300)
    assert "empty" in one_line_error(e)


def test_bpe_streaming_decode_of_split_characters():
    """generate's _Streamer decodes the growing id list: partial UTF-8 shows as U+FFFD, which it holds back."""
    tok = small_bpe()
    text = "naïve 東京 ☃ 😀👍🏽 déjà"
    ids = tok.encode(text)
    partial = [tok.decode(ids[:n]) for n in range(1, len(ids) + 1)]
    assert any(p.endswith("\ufffd") for p in partial)  # some token ends inside a character: no crash
    assert all(text.startswith(p.rstrip("\ufffd")) for p in partial)
    shown: list[str] = []
    streamer = _Streamer(tok.decode, shown.append, stop=None)
    for n in range(1, len(ids) + 1):
        streamer.push(ids[:n])
    streamer.finish(tok.decode(ids))
    assert "".join(shown) == text and "\ufffd" not in "".join(shown)


# ----------------------------------------------------------------------------- BPE-dropout on encoded tokens


def test_merge_parents_are_the_two_tokens_each_merge_joined():
    tok = small_bpe()
    parents = tok.merge_parents()
    assert parents.shape == (300, 2)
    merged = np.flatnonzero(parents[:, 0] >= 0)
    assert len(merged) == 300 - 257  # all but the 256 bytes and <|endoftext|>
    assert (parents[tok.eot_id] == -1).all()
    for i in merged:  # a token's bytes are its parents' bytes, one after the other
        assert tok._hf.id_to_token(int(i)) == "".join(tok._hf.id_to_token(int(j)) for j in parents[i])


def test_unmerge_keeps_the_text_and_replays_from_its_seed():
    tok, text = small_bpe(), shakespeare_head(20_000) + "".join(UNICODE_LINES[:2])
    ids, parents = np.array(tok.encode(text)), tok.merge_parents()
    assert np.array_equal(unmerge(ids, parents, 0.0, np.random.default_rng(0)), ids)
    every_byte = unmerge(ids, parents, 1.0, np.random.default_rng(0))
    assert len(every_byte) == len(text.encode("utf-8")) and (parents[every_byte, 0] == -1).all()
    lengths = []
    for p in (0.1, 0.3):
        cut = unmerge(ids, parents, p, np.random.default_rng(7))
        assert tok.decode(cut.tolist()) == text
        assert np.array_equal(cut, unmerge(ids, parents, p, np.random.default_rng(7)))
        assert not np.array_equal(cut, unmerge(ids, parents, p, np.random.default_rng(8)))
        lengths.append(len(cut))
    assert len(ids) < lengths[0] < lengths[1] < len(every_byte)


def test_unmerge_splits_each_token_with_probability_p():
    tok = small_bpe()
    parents = tok.merge_parents()
    of_bytes = [i for i in np.flatnonzero(parents[:, 0] >= 0) if (parents[parents[i], 0] == -1).all()]
    n, p = 20_000, 0.3  # a token merged from two bytes, n times: each split adds one token, and nothing more
    cut = unmerge(np.full(n, of_bytes[0]), parents, p, np.random.default_rng(1))
    splits = len(cut) - n
    assert abs(splits - n * p) < 4 * (n * p * (1 - p)) ** 0.5
    # A token of three bytes, (two bytes) + byte: whole with probability 1 - p, all bytes with p².
    is_byte = parents[:, 0] == -1
    three = next(i for i in np.flatnonzero(~is_byte) if parents[i, 0] in of_bytes and is_byte[parents[i, 1]])
    cut = unmerge(np.full(n, three), parents, p, np.random.default_rng(2))
    whole, halved = (cut == three).sum(), (cut == parents[three, 0]).sum()
    for count, share in ((whole, 1 - p), (n - whole - halved, p * p)):
        assert abs(count - n * share) < 4 * (n * share * (1 - share)) ** 0.5


def test_the_bpe_trainer_gets_long_words_in_pieces_and_prose_whole():
    from tinyllm.core.tokenizers import short_words

    prose = "ROMEO:\nBut soft, what light through yonder window breaks?\n" * 50
    assert list(short_words(prose)) == [prose]
    blob = "ab " + "Q" * (2 * LONG_WORD + 7) + " cd"  # a base64 blob, say
    pieces = list(short_words(blob))
    assert "".join(pieces) == blob and [len(p) for p in pieces] == [3 + LONG_WORD, LONG_WORD, 7 + 3]
