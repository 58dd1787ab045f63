"""Tests for tinyllm.files, tinyllm.tokenizers and tinyllm.data (CPU, no network, fast).

The real corpus and GPT-2 ranks come from the ``data_dir`` fixture (conftest); every
"no network" test points the download URLs at 127.0.0.1:9, which refuses at once, and
an autouse guard fails any test that tries to open a URL that is not on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import itertools
import os
import random
import shutil
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import tinyllm.files
from tinyllm.data import FixedWindows, RandomWindows, ShakespeareDataModule, encode_splits
from tinyllm.errors import TinyLLMError
from tinyllm.files import (
    GPT2_RANKS,
    SHAKESPEARE,
    _tiktoken_cache_path,
    atomic_write_bytes,
    ensure_file,
    gpt2_ranks_path,
)
from tinyllm.tokenizers import CharTokenizer, GPT2Tokenizer, tokenizer_from_state

REFUSED = "http://127.0.0.1:9/"  # the discard port: nothing listens, connections are refused instantly
PROXY_VARS = ["http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]

SMALL_TEXT = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms against a sea of troubles.\n"
) * 25  # ~4.3 KB, 28 distinct characters


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert msg, "error message is empty"
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _only_localhost_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly (not with an OSError the code would catch) on any non-local URL; never use proxies."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    real_urlopen = urllib.request.urlopen

    def guarded(url, *args, **kwargs):
        full = url if isinstance(url, str) else url.full_url
        if not full.startswith("http://127.0.0.1:"):
            raise AssertionError(f"test tried to reach the network: {full}")
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Both remote files point at a refused port, tiktoken's cache is empty; returns that empty cache dir."""
    monkeypatch.setattr(tinyllm.files, "SHAKESPEARE", dataclasses.replace(SHAKESPEARE, url=REFUSED + "input.txt"))
    monkeypatch.setattr(tinyllm.files, "GPT2_RANKS", dataclasses.replace(GPT2_RANKS, url=REFUSED + "r50k.tiktoken"))
    tk_cache = tmp_path / "tiktoken-cache"
    tk_cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tk_cache))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    return tk_cache


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    d = tmp_path / "empty-data"
    d.mkdir()
    return d


@pytest.fixture
def token_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private, initially empty TINYLLM_CACHE_DIR for this test."""
    d = tmp_path / "token-cache"
    d.mkdir()
    monkeypatch.setenv("TINYLLM_CACHE_DIR", str(d))
    return d


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    p = tmp_path / "corpus" / "small.txt"
    p.parent.mkdir()
    p.write_bytes(SMALL_TEXT.encode("utf-8"))
    return p


@pytest.fixture(scope="module")
def gpt2(data_dir: Path) -> GPT2Tokenizer:
    return GPT2Tokenizer(data_dir / GPT2_RANKS.name)


@pytest.fixture(scope="module")
def corpus(data_dir: Path) -> str:
    return (data_dir / SHAKESPEARE.name).read_text(encoding="utf-8")


class _Server:
    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def served(tmp_path: Path):
    """A local HTTP server over tmp_path/www holding small.txt (= SMALL_TEXT)."""
    root = tmp_path / "www"
    root.mkdir()
    payload = SMALL_TEXT.encode("utf-8")
    (root / "small.txt").write_bytes(payload)
    server = _Server(root)
    try:
        yield server, payload
    finally:
        server.close()


# ----------------------------------------------------------------------------- 1. split counts


@pytest.mark.parametrize(
    "kind, n_train, n_val, vocab",
    [("char", 1_003_854, 111_540, 65), ("gpt2", 301_966, 36_059, 50_257)],
)
def test_shakespeare_split_counts(data_dir: Path, kind: str, n_train: int, n_val: int, vocab: int):
    dm = ShakespeareDataModule(tokenizer=kind)
    splits = dm.splits()
    assert (len(splits.train), len(splits.val)) == (n_train, n_val)
    assert dm.vocab_size == vocab
    assert int(splits.train.max()) < vocab and int(splits.val.max()) < vocab


@pytest.mark.parametrize("kind", ["char", "gpt2"])
def test_splits_decode_back_to_the_corpus_parts(data_dir: Path, corpus: str, kind: str):
    dm = ShakespeareDataModule(tokenizer=kind)
    s, tok = dm.splits(), dm.tokenizer
    n_train = int(len(corpus) * 0.9)
    assert tok.decode(s.train.tolist()) == corpus[:n_train]
    assert tok.decode(s.val.tolist()) == corpus[n_train:]


# ----------------------------------------------------------------------------- 2. tokenizer round trips


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


# ----------------------------------------------------------------------------- 3. unknown characters


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


# ----------------------------------------------------------------------------- 4. clear errors


def test_missing_shakespeare_without_network(no_network: Path, empty_dir: Path):
    dm = ShakespeareDataModule(data_dir=str(empty_dir))
    with pytest.raises(TinyLLMError) as e:
        dm.splits()
    msg = one_line_error(e)
    assert "input.txt" in msg
    assert str(empty_dir.resolve() / "input.txt") in msg
    assert "TINYLLM_DATA_DIR" in msg
    assert list(empty_dir.iterdir()) == []
    with pytest.raises(TinyLLMError):  # the CLI asks for vocab_size first: same clear error
        ShakespeareDataModule(data_dir=str(empty_dir)).vocab_size


def test_corrupt_shakespeare_is_rejected(no_network: Path, empty_dir: Path):
    bad = empty_dir / "input.txt"
    bad.write_text("First Citizen:\nThis is not the real corpus.\n" * 100, encoding="utf-8")
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule(data_dir=str(empty_dir)).splits()
    msg = one_line_error(e)
    assert "sha256" in msg and "delete" in msg
    assert str(bad.resolve()) in msg
    assert bad.read_text(encoding="utf-8").startswith("First Citizen")  # left for the user to inspect


def test_corrupt_gpt2_ranks_in_data_dir_is_rejected(no_network: Path, empty_dir: Path):
    (empty_dir / "gpt2.tiktoken").write_bytes(b"SGVsbG8= 0\n")
    with pytest.raises(TinyLLMError) as e:
        gpt2_ranks_path(empty_dir)
    msg = one_line_error(e)
    assert "sha256" in msg and "delete" in msg and "gpt2.tiktoken" in msg


def test_missing_gpt2_ranks_without_network(no_network: Path, empty_dir: Path, small_corpus: Path):
    with pytest.raises(TinyLLMError) as e:
        tokenizer_from_state({"kind": "gpt2"}, data_dir=empty_dir)
    msg = one_line_error(e)
    assert "gpt2.tiktoken" in msg
    assert str(empty_dir.resolve() / "gpt2.tiktoken") in msg
    assert list(empty_dir.iterdir()) == [] and list(no_network.iterdir()) == []

    dm = ShakespeareDataModule(data_dir=str(empty_dir), path=str(small_corpus), tokenizer="gpt2")
    with pytest.raises(TinyLLMError) as e:
        dm.splits()
    assert str(empty_dir.resolve() / "gpt2.tiktoken") in one_line_error(e)


def test_data_path_that_does_not_exist(tmp_path: Path):
    missing = tmp_path / "nope" / "corpus.txt"
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule(path=str(missing)).splits()
    msg = one_line_error(e)
    assert str(missing) in msg and "data.path" in msg


def test_data_path_that_is_a_directory(tmp_path: Path):
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule(path=str(tmp_path)).splits()
    assert str(tmp_path) in one_line_error(e)


def test_data_path_that_is_not_utf8(tmp_path: Path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("Ophélie, à la fenêtre\n".encode("latin-1") * 50 + b"\xff\xfe\x80")
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule(path=str(p)).splits()
    msg = one_line_error(e)
    assert str(p) in msg and "UTF-8" in msg


def test_corpus_too_small_for_block_size(tmp_path: Path, token_cache: Path):
    p = tmp_path / "tiny.txt"
    p.write_text("abcdefghij" * 10, encoding="utf-8")  # 100 chars: 90 train, 10 val
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule(path=str(p), block_size=32).splits()
    msg = one_line_error(e)
    assert "block_size=32" in msg and "val" in msg
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule(path=str(p), block_size=200, val_fraction=0.5).splits()
    assert "block_size=200" in one_line_error(e)
    # Just long enough: both splits have block_size + 2 tokens.
    p.write_text("abcdefghij" * 2, encoding="utf-8")
    s = ShakespeareDataModule(path=str(p), block_size=8, val_fraction=0.5).splits()
    assert len(s.train) == len(s.val) == 10


# ----------------------------------------------------------------------------- 5. downloads


def test_download_into_data_dir(served, tmp_path: Path):
    server, payload = served
    remote = dataclasses.replace(SHAKESPEARE, url=server.url + "small.txt", sha256=hashlib.sha256(payload).hexdigest())
    target_dir = tmp_path / "fresh" / "data"  # does not exist yet
    path = ensure_file(remote, target_dir)
    assert path == target_dir.resolve() / "input.txt"
    assert path.read_bytes() == payload
    assert sorted(p.name for p in target_dir.iterdir()) == ["input.txt"]  # no temp files left
    assert server.requests == ["/small.txt"]
    # Present and verified: no second download.
    assert ensure_file(remote, target_dir) == path
    assert server.requests == ["/small.txt"]


def test_download_feeds_the_data_module(served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token_cache: Path):
    server, payload = served
    monkeypatch.setattr(
        tinyllm.files,
        "SHAKESPEARE",
        dataclasses.replace(SHAKESPEARE, url=server.url + "small.txt", sha256=hashlib.sha256(payload).hexdigest()),
    )
    dm = ShakespeareDataModule(data_dir=str(tmp_path / "d"), block_size=16)
    s = dm.splits()
    assert len(s.train) + len(s.val) == len(SMALL_TEXT)
    assert dm.vocab_size == len(set(SMALL_TEXT))
    assert (tmp_path / "d" / "input.txt").read_bytes() == payload


def test_download_with_wrong_checksum_leaves_nothing(served, empty_dir: Path):
    server, payload = served
    remote = dataclasses.replace(SHAKESPEARE, url=server.url + "small.txt", sha256="0" * 64)
    with pytest.raises(TinyLLMError) as e:
        ensure_file(remote, empty_dir)
    msg = one_line_error(e)
    assert "sha256" in msg and "input.txt" in msg
    assert hashlib.sha256(payload).hexdigest()[:12] in msg  # what was actually received
    assert list(empty_dir.iterdir()) == []  # neither the file nor a temp file
    assert server.requests == ["/small.txt"]


def test_download_of_missing_remote_file_is_a_clear_error(served, empty_dir: Path):
    server, _ = served
    remote = dataclasses.replace(SHAKESPEARE, url=server.url + "no-such-file.txt")
    with pytest.raises(TinyLLMError) as e:
        ensure_file(remote, empty_dir)
    assert "404" in one_line_error(e)
    assert list(empty_dir.iterdir()) == []


def test_atomic_write_keeps_old_file_when_replace_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    assert target.read_bytes() == b"old"

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new contents")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # temp file cleaned up


# ----------------------------------------------------------------------------- 6. gpt2 ranks search order


def test_gpt2_ranks_found_in_data_dir_first(data_dir: Path, no_network: Path):
    decoy = _tiktoken_cache_path(tinyllm.files.GPT2_RANKS.url)
    decoy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_dir / "gpt2.tiktoken", decoy)
    assert gpt2_ranks_path(data_dir) == data_dir / "gpt2.tiktoken"


def test_gpt2_ranks_from_tiktoken_cache_without_network(
    data_dir: Path, empty_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    tk_cache = tmp_path / "tk"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tk_cache))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    cached = _tiktoken_cache_path(GPT2_RANKS.url)  # the real r50k_base URL
    assert cached.parent == tk_cache
    assert cached.name == hashlib.sha1(GPT2_RANKS.url.encode()).hexdigest()
    tk_cache.mkdir()
    shutil.copyfile(data_dir / "gpt2.tiktoken", cached)

    # The autouse guard turns any download attempt into a test failure.
    assert gpt2_ranks_path(empty_dir) == cached
    assert list(empty_dir.iterdir()) == []  # nothing downloaded or copied
    tok = tokenizer_from_state({"kind": "gpt2"}, data_dir=empty_dir)
    assert tok.encode("Hello world") == [15496, 995]


def test_tiktoken_cache_path_matches_tiktoken(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import requests
    import tiktoken.load

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    cached = _tiktoken_cache_path(GPT2_RANKS.url)
    shutil.copyfile(data_dir / "gpt2.tiktoken", cached)

    def no_requests(*args, **kwargs):
        raise AssertionError("tiktoken tried to download: the cache path does not match")

    monkeypatch.setattr(requests, "get", no_requests)
    data = tiktoken.load.read_file_cached(GPT2_RANKS.url, expected_hash=GPT2_RANKS.sha256)
    assert data == (data_dir / "gpt2.tiktoken").read_bytes()


def test_corrupt_tiktoken_cache_is_not_used(data_dir: Path, empty_dir: Path, no_network: Path):
    cached = _tiktoken_cache_path(tinyllm.files.GPT2_RANKS.url)
    assert cached.parent == no_network
    cached.write_bytes((data_dir / "gpt2.tiktoken").read_bytes()[:1000])
    with pytest.raises(TinyLLMError) as e:
        gpt2_ranks_path(empty_dir)
    assert "gpt2.tiktoken" in one_line_error(e)


# ----------------------------------------------------------------------------- 7. the path option


def test_training_on_a_custom_text_file(small_corpus: Path, empty_dir: Path, no_network: Path, token_cache: Path):
    # data_dir is empty and downloads fail: a custom path must not need Tiny Shakespeare.
    dm = ShakespeareDataModule(data_dir=str(empty_dir), path=str(small_corpus), tokenizer="char", block_size=32)
    tok = dm.tokenizer
    assert dm.vocab_size == len(set(SMALL_TEXT)) == 28
    assert tok.chars == "".join(sorted(set(SMALL_TEXT)))
    s = dm.splits()
    n_train = int(len(SMALL_TEXT) * 0.9)
    assert len(s.train) == n_train and len(s.val) == len(SMALL_TEXT) - n_train
    assert tok.decode(s.train.tolist()) == SMALL_TEXT[:n_train]
    assert tok.decode(s.val.tolist()) == SMALL_TEXT[n_train:]
    assert list(empty_dir.iterdir()) == []


def test_custom_text_with_non_ascii_characters(tmp_path: Path, token_cache: Path):
    text = "Ophélie — « où es-tu ? » 🌹\n" * 200
    p = tmp_path / "fr.txt"
    p.write_bytes(text.encode("utf-8"))
    dm = ShakespeareDataModule(path=str(p), val_fraction=0.25, block_size=16)
    s = dm.splits()
    n_train = int(len(text) * 0.75)  # characters, not bytes
    assert (len(s.train), len(s.val)) == (n_train, len(text) - n_train)
    assert set(dm.tokenizer.chars) == set(text)
    assert dm.tokenizer.decode(s.val.tolist()) == text[n_train:]


# ----------------------------------------------------------------------------- 8. token cache


def _npz(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.npz"))


def test_token_cache_is_reused(small_corpus: Path, token_cache: Path, monkeypatch: pytest.MonkeyPatch):
    first = ShakespeareDataModule(path=str(small_corpus), block_size=16).splits()
    files = _npz(token_cache)
    assert len(files) == 1
    assert not (small_corpus.parent / ".tinyllm-cache").exists()  # TINYLLM_CACHE_DIR wins
    with np.load(files[0]) as z:
        np.testing.assert_array_equal(z["train"], first.train)
        np.testing.assert_array_equal(z["val"], first.val)

    def must_not_encode(self, text):
        raise AssertionError("tokenized again although a cache file exists")

    monkeypatch.setattr(CharTokenizer, "encode", must_not_encode)
    second = ShakespeareDataModule(path=str(small_corpus), block_size=16).splits()
    np.testing.assert_array_equal(second.train, first.train)
    np.testing.assert_array_equal(second.val, first.val)
    assert _npz(token_cache) == files


CORRUPTIONS = {
    "garbage": lambda b: b"this is not an npz file at all" * 10,
    "wrong-arrays": lambda b: _npz_bytes(other=np.arange(3)),
    "empty": lambda b: b"",
    "truncated": lambda b: b[: len(b) // 2],
    "flipped-header-byte": lambda b: _flip(b, 100),  # inside train.npy's header: numpy refuses it
    "flipped-data-byte": lambda b: _flip(b, len(b) // 2),  # inside the array data: zip CRC mismatch
}


def _flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 0xFF]) + b[i + 1 :]


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize(
    "corruption",
    [
        "garbage",
        "wrong-arrays",
        "empty",
        "truncated",
        "flipped-header-byte",
        "flipped-data-byte",
    ],
)
def test_corrupt_token_cache_is_ignored_and_rebuilt(small_corpus: Path, token_cache: Path, corruption: str):
    fresh = ShakespeareDataModule(path=str(small_corpus), block_size=16).splits()
    (cache_file,) = _npz(token_cache)
    good = cache_file.read_bytes()
    cache_file.write_bytes(CORRUPTIONS[corruption](good))

    rebuilt = ShakespeareDataModule(path=str(small_corpus), block_size=16).splits()
    np.testing.assert_array_equal(rebuilt.train, fresh.train)
    np.testing.assert_array_equal(rebuilt.val, fresh.val)
    with np.load(cache_file) as z:  # rewritten with good contents
        np.testing.assert_array_equal(z["train"], fresh.train)
        np.testing.assert_array_equal(z["val"], fresh.val)


def test_cache_files_are_keyed_by_tokenizer_fraction_and_text(
    data_dir: Path, small_corpus: Path, token_cache: Path, tmp_path: Path
):
    char = ShakespeareDataModule(data_dir=str(data_dir), path=str(small_corpus), tokenizer="char", block_size=16)
    bpe = ShakespeareDataModule(data_dir=str(data_dir), path=str(small_corpus), tokenizer="gpt2", block_size=16)
    sc, sb = char.splits(), bpe.splits()
    names = [p.name for p in _npz(token_cache)]
    assert len(names) == 2
    assert any("char" in n for n in names) and any("gpt2" in n for n in names)
    assert len(sb.train) < len(sc.train)  # BPE tokens, not characters
    assert bpe.tokenizer.decode(sb.train.tolist()) + bpe.tokenizer.decode(sb.val.tolist()) == SMALL_TEXT

    ShakespeareDataModule(path=str(small_corpus), val_fraction=0.2, block_size=16).splits()
    assert len(_npz(token_cache)) == 3

    other = tmp_path / "other.txt"
    other.write_text(SMALL_TEXT.upper(), encoding="utf-8")
    so = ShakespeareDataModule(path=str(other), block_size=16).splits()
    assert len(_npz(token_cache)) == 4
    assert len(so.train) == len(sc.train)


def test_encode_splits_direct(small_corpus: Path, token_cache: Path):
    tok = CharTokenizer.from_text(SMALL_TEXT)
    s = encode_splits(small_corpus, SMALL_TEXT, tok, 0.1)
    assert s.train.dtype == np.uint16
    assert tok.decode(s.train.tolist()) + tok.decode(s.val.tolist()) == SMALL_TEXT


# ----------------------------------------------------------------------------- 9. RandomWindows


def _full_windows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, y[:, -1:]], dim=1)


def test_random_windows_batch_is_a_pure_function_of_seed_rank_k():
    tokens = torch.randint(0, 1000, (5000,), generator=torch.Generator().manual_seed(0))
    rw = RandomWindows(tokens, block_size=16, batch_size=8, seed=1, rank=0)
    x, y = rw.batch(3)
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == tokens.dtype
    x2, y2 = rw.batch(3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, y3 = RandomWindows(tokens, 16, 8, seed=1, rank=0, start=99).batch(3)  # start does not matter
    assert torch.equal(x, x3) and torch.equal(y, y3)
    assert torch.equal(x[:, 1:], y[:, :-1])

    for other in (rw.batch(4), RandomWindows(tokens, 16, 8, seed=1, rank=1).batch(3),
                  RandomWindows(tokens, 16, 8, seed=2, rank=0).batch(3)):
        assert not torch.equal(other[0], x)


def test_random_windows_are_shifted_slices_of_the_tokens():
    tokens = torch.arange(1000, 1500)  # value - 1000 = position
    rw = RandomWindows(tokens, block_size=10, batch_size=16, seed=7, rank=0)
    for k in range(5):
        x, y = rw.batch(k)
        assert torch.equal(y, x + 1)
        starts = x[:, 0] - 1000
        for row, s in zip(x, starts.tolist()):
            assert torch.equal(row, tokens[s : s + 10])


def test_random_windows_iteration_from_start():
    tokens = torch.arange(300)
    rw = RandomWindows(tokens, block_size=8, batch_size=4, seed=3, rank=2, start=5)
    got = list(itertools.islice(iter(rw), 4))
    for k, (x, y) in zip(range(5, 9), got):
        bx, by = rw.batch(k)
        assert torch.equal(x, bx) and torch.equal(y, by)
    again = list(itertools.islice(iter(rw), 4))  # re-iterating restarts at start
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, again))


def test_random_windows_never_run_past_the_end():
    n, T = 10, 4
    tokens = torch.arange(100, 100 + n)
    rw = RandomWindows(tokens, block_size=T, batch_size=64, seed=0, rank=0)
    valid = {tuple(tokens[s : s + T + 1].tolist()) for s in range(n - T)}
    seen = set()
    for k in range(200):
        x, y = rw.batch(k)
        for w in _full_windows(x, y).tolist():
            assert tuple(w) in valid, f"window {w} is not tokens[s:s+{T + 1}]"
            seen.add(tuple(w))
    assert seen == valid  # every window, including the last one, is reachable


def test_random_windows_with_workers_match_single_process():
    tokens = torch.arange(2000)
    rw = RandomWindows(tokens, block_size=8, batch_size=4, seed=11, rank=0, start=3)
    loader = torch.utils.data.DataLoader(rw, batch_size=None, num_workers=2, generator=torch.Generator())
    got = list(itertools.islice(iter(loader), 6))
    for k, (x, y) in zip(range(3, 9), got):
        bx, by = rw.batch(k)
        assert torch.equal(x, bx) and torch.equal(y, by)


# ----------------------------------------------------------------------------- 10. FixedWindows


@pytest.mark.parametrize("n", [101, 103, 110, 111])
def test_fixed_windows_tile_the_split(n: int):
    T = 10
    tokens = torch.arange(500, 500 + n)
    fw = FixedWindows(tokens, T)
    assert len(fw) == (n - 1) // T
    xs, ys = zip(*(fw[i] for i in range(len(fw))))
    for i, (x, y) in enumerate(zip(xs, ys)):
        assert x.shape == y.shape == (T,)
        assert torch.equal(x, tokens[i * T : (i + 1) * T])
        assert torch.equal(y, tokens[i * T + 1 : (i + 1) * T + 1])
        x2, y2 = fw[i]
        assert torch.equal(x, x2) and torch.equal(y, y2)
    # Consecutive, non-overlapping: the inputs concatenate to a prefix of the split.
    assert torch.equal(torch.cat(xs), tokens[: len(fw) * T])
    assert int(ys[-1][-1]) <= int(tokens[-1])


def test_fixed_windows_in_a_loader_cover_everything_once():
    tokens = torch.arange(1001)
    loader = torch.utils.data.DataLoader(FixedWindows(tokens, 10), batch_size=7, shuffle=False)
    xs = torch.cat([x for x, _ in loader])
    assert xs.shape == (100, 10)
    assert torch.equal(xs.flatten(), tokens[:1000])


# ----------------------------------------------------------------------------- 11. the data module's loaders


def _rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


@pytest.fixture
def shakespeare_dm(data_dir: Path) -> ShakespeareDataModule:
    dm = ShakespeareDataModule(tokenizer="char", block_size=32, batch_size=4, val_batch_size=3, seed=42)
    dm.setup("fit")
    return dm


def test_loaders_yield_batches_of_the_right_shape(shakespeare_dm: ShakespeareDataModule):
    dm = shakespeare_dm
    assert dm.trainer is None
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    vx, vy = next(iter(dm.val_dataloader()))
    assert vx.shape == vy.shape == (3, 32)
    assert torch.equal(vx[:, 1:], vy[:, :-1])
    val = dm.val_dataloader()
    assert len(val.dataset) == (111_540 - 1) // 32
    assert torch.equal(vx[0], torch.from_numpy(dm.splits().val[:32].astype(np.int64)))


def test_loaders_do_not_touch_global_rng(shakespeare_dm: ShakespeareDataModule):
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    before = _rng_states()
    dm = shakespeare_dm
    list(itertools.islice(iter(dm.train_dataloader()), 3))
    list(itertools.islice(iter(dm.val_dataloader()), 3))
    list(itertools.islice(iter(dm.train_dataloader()), 1))
    after = _rng_states()
    assert torch.equal(before[0], after[0]), "torch's global RNG state changed"
    assert np.array_equal(before[1], after[1]) and before[2] == after[2]


def test_train_loader_is_the_random_windows_stream(shakespeare_dm: ShakespeareDataModule):
    dm = shakespeare_dm
    reference = RandomWindows(dm._train_tokens, 32, 4, seed=42, rank=0)
    for k, (x, y) in enumerate(itertools.islice(iter(dm.train_dataloader()), 3)):
        bx, by = reference.batch(k)
        assert torch.equal(x, bx) and torch.equal(y, by)


def test_state_dict_round_trip_resumes_at_batch_k(data_dir: Path):
    def fresh() -> ShakespeareDataModule:
        dm = ShakespeareDataModule(tokenizer="char", block_size=32, batch_size=4, seed=42)
        dm.setup("fit")
        return dm

    dm = fresh()
    assert dm.state_dict() == {"train_batches_done": 0}
    dm.load_state_dict({"train_batches_done": 7})
    assert dm.state_dict() == {"train_batches_done": 7}
    resumed = list(itertools.islice(iter(dm.train_dataloader()), 2))

    ref = fresh()
    windows = RandomWindows(ref._train_tokens, ref.block_size, ref.batch_size, ref.seed, rank=0)
    for k, (x, y) in zip((7, 8), resumed):
        bx, by = windows.batch(k)
        assert torch.equal(x, bx) and torch.equal(y, by)
    first_of_fresh = next(iter(ref.train_dataloader()))[0]
    assert not torch.equal(resumed[0][0], first_of_fresh)

    restored = fresh()
    restored.load_state_dict(dm.state_dict())
    assert torch.equal(next(iter(restored.train_dataloader()))[0], resumed[0][0])


# ----------------------------------------------------------------------------- 12. bad options


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(tokenizer="bpe"), "tokenizer"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=-1), "batch_size"),
        (dict(block_size=0), "block_size"),
        (dict(val_batch_size=0), "val_batch_size"),
        (dict(val_fraction=1.5), "val_fraction"),
        (dict(val_fraction=0.0), "val_fraction"),
        (dict(val_fraction=1.0), "val_fraction"),
        (dict(val_fraction=-0.1), "val_fraction"),
    ],
)
def test_bad_options_raise(kwargs: dict, word: str):
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule(**kwargs)
    assert word in one_line_error(e)
