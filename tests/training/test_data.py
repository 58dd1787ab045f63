"""Tests for tinyllm.training.data: splits, the token cache, random and fixed windows, the data module's state."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import random
import tracemalloc
from pathlib import Path

import numpy as np

from tinyllm.core.dataset import ShardFile, split_text
import pytest
import torch

import tinyllm.files
from tests.conftest import SMALL_TEXT
from tests.helpers.cli import one_line_error
from tests.helpers.corpora import token_folder
from tinyllm.core.tokenizers import CharTokenizer
from tinyllm.errors import TinyLLMError
from tinyllm.files import (
    SHAKESPEARE,
)
from tinyllm.training.data import (
    FixedWindows,
    RandomWindows,
    ResegmentedWindows,
    ShakespeareDataModule,
    encode_splits,
    read_corpus,
)


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


def test_data_path_that_does_not_exist(tmp_path: Path):
    missing = tmp_path / "nope" / "corpus.txt"
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule(path=str(missing)).splits()
    msg = one_line_error(e)
    assert str(missing) in msg and "data.path" in msg


@pytest.mark.parametrize(("name", "mention"), [
    ("book.txt.gz", "only prepare reads"), ("docs.jsonl", "only prepare reads"), ("DOCS.JSONL", "only prepare reads"),
    ("ds/meta.json", "give the folder"), ("ds/train_000000.bin", "give the folder"),
])  # fmt: skip
def test_data_path_that_only_prepare_reads_or_that_is_inside_a_dataset(tmp_path: Path, name: str, mention: str):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "meta.json").write_text("{}")  # a prepared folder, as is_dataset sees one
    path = tmp_path / name
    path.write_bytes(b"\x1f\x8b" if name.endswith(".gz") else b'{"text": "a"}\n')
    with pytest.raises(TinyLLMError) as e:  # fit would have read the gzip bytes, the JSON syntax, the shard
        ShakespeareDataModule(path=str(path)).splits()
    assert mention in one_line_error(e) and str(path) in str(e.value)


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


def test_an_empty_or_unreadable_text_file_says_so(tmp_path: Path, token_cache: Path):
    p = tmp_path / "corpus.txt"
    p.write_text("some text\n", encoding="utf-8")

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(p))

    with pytest.MonkeyPatch.context() as mp:  # as root, chmod 000 still reads: refuse it the way a user meets it
        mp.setattr("builtins.open", refused)
        with pytest.raises(TinyLLMError) as e:
            read_corpus(p)
    assert one_line_error(e) == f"cannot read {p} (Permission denied): check data.path and its permissions"
    p.write_text("", encoding="utf-8")
    for kind in ("char", "bpe:300"):  # the vocabulary is learned from the text: say the file is empty, not that
        with pytest.raises(TinyLLMError) as e:
            ShakespeareDataModule(path=str(p), tokenizer=kind).vocab_size
        assert one_line_error(e) == f"{p} is empty: give data.path a text file with some text in it"


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


def test_encode_splits_keeps_ids_above_16_bits(small_corpus: Path, token_cache: Path):
    text = "".join(chr(0x10000 + i) for i in range(70_000))  # 70,000 distinct characters: ids up to 69,999
    tok = CharTokenizer.from_text(text)
    s = encode_splits(small_corpus, text, tok, 0.1)
    assert s.train.dtype == np.dtype("<u4") and int(s.val.max()) > 1 << 16  # the dtype prepared shards use
    assert tok.decode(s.train.tolist()) + tok.decode(s.val.tolist()) == text


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
    reference = RandomWindows(dm.train_ids, 32, 4, seed=42, rank=0)
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
    windows = RandomWindows(ref.train_ids, ref.block_size, ref.batch_size, ref.seed, rank=0)
    for k, (x, y) in zip((7, 8), resumed):
        bx, by = windows.batch(k)
        assert torch.equal(x, bx) and torch.equal(y, by)
    first_of_fresh = next(iter(ref.train_dataloader()))[0]
    assert not torch.equal(resumed[0][0], first_of_fresh)

    restored = fresh()
    restored.load_state_dict(dm.state_dict())
    assert torch.equal(next(iter(restored.train_dataloader()))[0], resumed[0][0])


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(tokenizer="bpe"), "tokenizer"),
        (dict(tokenizer="bpe:100"), "bpe:257"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=-1), "batch_size"),
        (dict(block_size=0), "block_size"),
        (dict(val_batch_size=0), "val_batch_size"),
        (dict(val_fraction=1.5), "val_fraction"),
        (dict(val_fraction=0.0), "val_fraction"),
        (dict(val_fraction=1.0), "val_fraction"),
        (dict(val_fraction=-0.1), "val_fraction"),
        (dict(tokenizer="bpe:300", bpe_dropout=1.0), "bpe_dropout"),
        (dict(tokenizer="bpe:300", bpe_dropout=-0.1), "bpe_dropout"),
        (dict(tokenizer="char", bpe_dropout=0.1), "bpe:N"),
        (dict(tokenizer="gpt2", bpe_dropout=0.1), "bpe:N"),
        (dict(seed=-1), "data.seed"),
        (dict(num_workers=-1), "num_workers"),
    ],
)
def test_bad_options_raise(kwargs: dict, word: str):
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule(**kwargs)
    assert word in one_line_error(e)


# ----------------------------------------------------------------------------- prepared dataset folders


def _numbered(tmp_path: Path, n_train: int = 3500, n_val: int = 1200, shard_tokens: int = 1000, **meta) -> Path:
    """A prepared folder whose token ids are their positions (so a window shows where it was cut from)."""
    return token_folder(tmp_path / "numbered", np.arange(n_train), np.arange(n_val), shard_tokens, **meta)


def _prepared_dm(folder: Path, **kwargs) -> ShakespeareDataModule:
    dm = ShakespeareDataModule(path=str(folder), **{"block_size": 16, "batch_size": 8, "seed": 5, **kwargs})
    dm.setup("fit")
    return dm


def test_a_prepared_folder_is_read_window_by_window_not_loaded(tmp_path: Path):
    dm = _prepared_dm(_numbered(tmp_path))
    assert dm.prepared and dm.vocab_size == 50_257 and dm.tokenizer_state == {"kind": "gpt2"}
    for shards in (dm.train_ids, dm.val_ids):
        assert all(isinstance(s, ShardFile) for s in shards)
    assert [len(s) for s in dm.train_ids] == [1000, 1000, 1000, 500]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_memory_does_not_grow_with_the_shards(tmp_path: Path):
    folder = token_folder(tmp_path / "big", np.arange(8_000_000) % 50_000, np.arange(2_000_000) % 50_000,
                          shard_tokens=10_000_000)  # 20 MB of train tokens, 4 MB of val  # fmt: skip
    tracemalloc.start()
    try:
        dm = _prepared_dm(folder, block_size=64, batch_size=16, val_tokens=4096)
        list(itertools.islice(iter(dm.train_dataloader()), 5))
        for _ in dm.val_dataloader():
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"peak {peak:,} bytes: the shards were read into memory"


def test_prepared_batch_k_is_a_pure_function_of_seed_rank_k(tmp_path: Path):
    folder = _numbered(tmp_path)
    a, b = _prepared_dm(folder), _prepared_dm(folder)
    for k in (0, 3, 17):
        xa, ya = RandomWindows(a.train_ids, 16, 8, seed=5, rank=0).batch(k)
        xb, yb = RandomWindows(b.train_ids, 16, 8, seed=5, rank=0).batch(k)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    first = next(iter(a.train_dataloader()))[0]
    assert torch.equal(first, RandomWindows(b.train_ids, 16, 8, seed=5, rank=0).batch(0)[0])
    assert not torch.equal(first, RandomWindows(b.train_ids, 16, 8, seed=5, rank=1).batch(0)[0])
    assert not torch.equal(first, RandomWindows(b.train_ids, 16, 8, seed=6, rank=0).batch(0)[0])
    a.load_state_dict({"train_batches_done": 7})
    assert torch.equal(next(iter(a.train_dataloader()))[0], RandomWindows(b.train_ids, 16, 8, 5, 0).batch(7)[0])


def test_windows_never_span_two_shards_and_shards_are_drawn_by_size(tmp_path: Path):
    # Shards of 1000, 1000, 1000, 500 and 10 tokens: the last holds no window of 17.
    dm = _prepared_dm(_numbered(tmp_path, n_train=3510))
    rw = RandomWindows(dm.train_ids, 16, 64, seed=1, rank=0)
    used = np.zeros(5, dtype=int)
    for k in range(40):
        x, y = rw.batch(k)
        w = _full_windows(x, y)
        assert torch.equal(w[:, 1:] - w[:, :-1], torch.ones(64, 16, dtype=torch.int64))  # contiguous
        first, last = w[:, 0] // 1000, w[:, -1] // 1000
        assert torch.equal(first, last), "a window spans two shards"
        used += np.bincount(first.numpy(), minlength=5)
    share = used / used.sum()
    valid = np.array([984, 984, 984, 484, 0]) / 3436
    assert used[4] == 0 and np.all(np.abs(share - valid) < 0.04), share


def test_one_shard_draws_exactly_as_the_text_file_does(data_dir: Path, tmp_path: Path):
    from tests.helpers.corpora import prepared

    folder = prepared(data_dir / "input.txt", tmp_path / "shakespeare", tokenizer="char")
    text = ShakespeareDataModule(block_size=32, batch_size=4, seed=42)
    text.setup("fit")
    shards = _prepared_dm(folder, block_size=32, batch_size=4, seed=42)
    for (x1, y1), (x2, y2) in zip(itertools.islice(iter(text.train_dataloader()), 3),
                                  itertools.islice(iter(shards.train_dataloader()), 3)):  # fmt: skip
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    tv, sv = text.val_dataloader(), shards.val_dataloader()
    assert len(tv.dataset) == len(sv.dataset) == (111_540 - 1) // 32
    for (x1, y1), (x2, y2) in zip(tv, sv):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert text.val_bytes_per_token == shards.val_bytes_per_token == 1.0
    assert shards.tokenizer_state == text.tokenizer_state and shards.vocab_size == 65


def test_val_windows_of_a_large_split_are_a_fixed_evenly_spaced_subset(tmp_path: Path):
    folder = _numbered(tmp_path, n_val=5000, shard_tokens=1000)
    whole = _prepared_dm(folder, val_tokens=None).val_windows()
    assert len(whole) == 5 * (999 // 16) == 310  # each shard cut on its own
    dm = _prepared_dm(folder, val_tokens=800)
    subset = dm.val_windows()
    assert len(subset) == 800 // 16 == 50
    starts = [int(subset[i][0][0]) for i in range(len(subset))]
    assert starts == [int(_prepared_dm(folder, val_tokens=800).val_windows()[i][0][0]) for i in range(50)]  # fixed
    assert starts == sorted(starts) and starts[0] == 0 and starts[-1] > 4000  # spread over the whole split
    whole_starts = {int(whole[i][0][0]) for i in range(len(whole))}
    assert set(starts) <= whole_starts  # the subset is made of the same windows
    for i in range(len(subset)):
        x, y = subset[i]
        assert torch.equal(y, x + 1)
    xs = torch.cat([x for x, _ in dm.val_dataloader()])
    assert xs.shape == (50, 16) and torch.equal(xs[:, 0], torch.tensor(starts))
    assert len(_prepared_dm(folder, val_tokens=5000).val_windows()) == 310  # not larger than the limit: whole


def test_val_tokens_bounds_a_text_file_too(small_corpus: Path, token_cache: Path):
    dm = ShakespeareDataModule(path=str(small_corpus), block_size=8, val_tokens=64)
    dm.setup("fit")
    n_val = len(dm.splits().val)
    assert n_val > 64 and len(dm.val_windows()) == 8
    whole = ShakespeareDataModule(path=str(small_corpus), block_size=8, val_tokens=None)
    whole.setup("fit")
    assert len(whole.val_windows()) == (n_val - 1) // 8
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule(val_tokens=0)
    assert "val_tokens" in one_line_error(e)


def test_fixed_windows_subset_picks_every_total_over_count_th_window():
    tokens = torch.arange(1001)  # 100 windows of 10
    fw = FixedWindows(tokens, 10, max_windows=7)
    assert len(fw) == 7 and fw.total == 100
    assert [int(fw[i][0][0]) for i in range(7)] == [(i * 100 // 7) * 10 for i in range(7)]
    assert len(FixedWindows(tokens, 10, max_windows=500)) == 100
    with pytest.raises(IndexError):
        fw[7]


def test_val_bytes_per_token(tmp_path: Path, token_cache: Path, data_dir: Path):
    ascii_dm = ShakespeareDataModule(block_size=32)
    ascii_dm.setup("fit")
    assert ascii_dm.val_bytes_per_token == 1.0  # char on ASCII: a byte a token
    text = "Ophélie — « où es-tu ? » 🌹\n" * 200
    p = tmp_path / "fr.txt"
    p.write_bytes(text.encode("utf-8"))
    dm = ShakespeareDataModule(path=str(p), block_size=16)
    dm.setup("fit")
    val_text = text[int(len(text) * 0.9) :]
    assert dm.val_bytes_per_token == pytest.approx(len(val_text.encode()) / len(val_text))
    assert dm.val_bytes_per_token > 1
    bpe = ShakespeareDataModule(path=str(p), tokenizer="gpt2", block_size=16)
    bpe.setup("fit")
    assert bpe.val_bytes_per_token == pytest.approx(len(val_text.encode()) / len(bpe.splits().val))
    folder = _numbered(tmp_path, val_bytes=3000)  # 1200 val tokens
    assert _prepared_dm(folder).val_bytes_per_token == 2.5


def test_a_prepared_folder_brings_its_own_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    folder = _numbered(tmp_path, vocab_size=30, tokenizer={"kind": "char", "chars": "abcdefghijklmnopqrstuvwxyz.,;\n"})
    for kind in ("gpt2", "char", "bpe:300"):  # data.tokenizer is ignored (evaluate passes the checkpoint's spec)
        dm = ShakespeareDataModule(path=str(folder), tokenizer=kind)
        assert dm.vocab_size == 30 and dm.tokenizer.name == "char" and dm.tokenizer.vocab_size == 30
        said = capsys.readouterr().err
        assert ("holds char tokens: training with its tokenizer, not data.tokenizer" in said) == (kind != "char")
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule(path=str(folder)).splits()
    assert "prepared" in one_line_error(e)


def test_prepared_shards_in_worker_processes_match_one_process(tmp_path: Path):
    dm = _prepared_dm(_numbered(tmp_path), num_workers=2)
    got = list(itertools.islice(iter(dm.train_dataloader()), 4))
    rw = RandomWindows(dm.train_ids, 16, 8, seed=5, rank=0)
    for k, (x, y) in enumerate(got):
        bx, by = rw.batch(k)
        assert torch.equal(x, bx) and torch.equal(y, by)


def test_a_gpt2_folder_trains_without_gpt2s_ranks_file(tmp_path: Path, no_network: Path, empty_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    """Checking meta.json's vocab_size against the tokenizer must not need the ranks file (a node that only trains)."""
    monkeypatch.setenv("TINYLLM_DATA_DIR", str(empty_dir))
    dm = _prepared_dm(_numbered(tmp_path))
    assert dm.vocab_size == 50_257 and not any(empty_dir.iterdir())


def _edit_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, **changes}))


@pytest.mark.parametrize(
    "damage, word",
    [
        (lambda f: (f / "meta.json").unlink(), "not a file nor a prepared dataset"),
        (lambda f: (f / "meta.json").write_text("{"), "corrupt"),
        (lambda f: (f / "meta.json").write_text((f / "meta.json").read_text().replace('"version": 1', '"version": 9')),
         "version 9"),
        (lambda f: (f / "train_000002.bin").unlink(), "missing"),
        (lambda f: (f / "meta.json").write_text((f / "meta.json").read_text().replace('"bytes": 3500',
                                                                                    '"bytes": Infinity')), "corrupt"),
        (lambda f: _edit_meta(f, vocab_size=50_304), "50,257 ids"),  # padded by hand: ids no tokenizer decodes
        (lambda f: _edit_meta(f, tokenizer={"kind": "char", "chars": "ab"}), "2 ids"),  # more ids than it decodes
    ],
)
def test_a_broken_prepared_folder_is_one_line_error(tmp_path: Path, damage, word: str):
    folder = _numbered(tmp_path)
    damage(folder)
    with pytest.raises(TinyLLMError) as e:
        _prepared_dm(folder)
    msg = one_line_error(e)
    assert word in msg and str(folder) in msg


def test_shards_too_short_for_the_block_size(tmp_path: Path):
    with pytest.raises(TinyLLMError) as e:
        _prepared_dm(_numbered(tmp_path, n_val=50), block_size=64)
    msg = one_line_error(e)
    assert "block_size=64" in msg and "val" in msg


def test_a_bpe_tokenizer_learns_from_the_training_split_only(small_corpus: Path, monkeypatch: pytest.MonkeyPatch):
    import tinyllm.core.tokenizers as tokenizers

    seen: list[str] = []
    learn = tokenizers.train_bpe
    monkeypatch.setattr(tokenizers, "train_bpe", lambda text, n: (seen.append(text), learn(text, n))[1])
    dm = ShakespeareDataModule(path=str(small_corpus), tokenizer="bpe:300", block_size=16)
    splits, tok = dm.splits(), dm.tokenizer
    n_train = int(len(SMALL_TEXT) * 0.9)
    assert seen == [SMALL_TEXT[:n_train]]
    assert (tok.name, tok.spec, tok.vocab_size) == ("bpe", "bpe:300", 300)
    assert tok.decode(splits.train.tolist()) == SMALL_TEXT[:n_train] and tok.decode(splits.val.tolist()) == SMALL_TEXT[n_train:]


# ----------------------------------------------------------------------------- BPE-dropout


def _resegmenting_dm(corpus: Path, p: float = 0.2) -> ShakespeareDataModule:
    dm = ShakespeareDataModule(path=str(corpus), tokenizer="bpe:300", block_size=16, batch_size=4, seed=3,
                               bpe_dropout=p)  # fmt: skip
    dm.setup("fit")
    return dm


def test_bpe_dropout_cuts_each_pass_anew_and_batch_k_stays_a_pure_function(small_corpus: Path, token_cache: Path):
    dm = _resegmenting_dm(small_corpus)
    loader = dm.train_dataloader()
    windows = loader.dataset
    assert isinstance(windows, ResegmentedWindows)
    per_pass = windows.batches_per_pass
    assert per_pass == len(dm.train_ids) // (16 * 4)
    batches = list(itertools.islice(iter(loader), 2 * per_pass + 1))
    text = split_text(SMALL_TEXT, 0.1)[0]
    other = ResegmentedWindows(dm.train_ids, dm.tokenizer.merge_parents(), 0.2, 16, 4, seed=3, rank=0)
    passes = []
    for e in range(3):
        other.batch(e * per_pass)
        passes.append(other.tokens.clone())
        assert dm.tokenizer.decode(passes[-1].tolist()) == text  # the same text, cut another way
        assert len(passes[-1]) > len(dm.train_ids)
    assert not torch.equal(passes[0], passes[1]) and not torch.equal(passes[1], passes[2])
    for k in (2 * per_pass, 0, per_pass + 1, 1):  # in any order: the cut and the windows depend on k only
        x, y = other.batch(k)
        assert torch.equal(x, batches[k][0]) and torch.equal(y, batches[k][1])


def test_bpe_dropout_resumes_at_batch_k_and_leaves_validation_alone(small_corpus: Path, token_cache: Path):
    dm = _resegmenting_dm(small_corpus)
    plain = ShakespeareDataModule(path=str(small_corpus), tokenizer="bpe:300", block_size=16, batch_size=4, seed=3)
    plain.setup("fit")
    assert torch.equal(dm.val_ids, plain.val_ids) and torch.equal(dm.train_ids, plain.train_ids)
    per_pass = dm.train_dataloader().dataset.batches_per_pass
    start = per_pass - 3  # the resumed stream crosses into the next pass
    straight = list(itertools.islice(iter(dm.train_dataloader()), start + 15))
    resumed = _resegmenting_dm(small_corpus)
    resumed.load_state_dict({"train_batches_done": start})
    for (x, y), (rx, ry) in zip(straight[start:], itertools.islice(iter(resumed.train_dataloader()), 15), strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    unmerged = itertools.islice(iter(plain.train_dataloader()), len(straight))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(straight, unmerged))


def test_bpe_dropout_refuses_a_prepared_folder(tmp_path: Path):
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule(path=str(_numbered(tmp_path)), tokenizer="bpe:300", bpe_dropout=0.1)
    assert "bpe_dropout" in one_line_error(e)


@pytest.mark.parametrize(("train_tokens", "fix"), [(400, "a larger --shard_tokens"), (30, "prepare more text")])
def test_shards_too_short_for_a_window_say_whether_text_or_shards_are_short(tmp_path: Path, train_tokens: int,
                                                                              fix: str):
    folder = token_folder(tmp_path / "ds", np.arange(train_tokens) % 100, np.arange(400) % 100, shard_tokens=30)
    with pytest.raises(TinyLLMError) as e:  # a window of 33 tokens never crosses a shard of 30
        ShakespeareDataModule(path=str(folder), block_size=32).prepare_data()
    assert f"{fix}, or use a smaller block_size" in one_line_error(e)


def test_a_prepared_folder_says_a_val_fraction_it_cannot_use_and_checks_the_tokenizer_spec(tmp_path: Path, capsys):
    folder = token_folder(tmp_path / "ds", np.arange(400) % 100, np.arange(100) % 100, options={"val_fraction": 0.1})
    ShakespeareDataModule(path=str(folder), tokenizer="gpt2", val_fraction=0.3).dataset()
    said = capsys.readouterr().err
    assert "was split by prepare (val_fraction 0.1): that split is used, not a val_fraction of 0.3" in said
    ShakespeareDataModule(path=str(folder), tokenizer="gpt2", val_fraction=0.1).dataset()
    assert "val_fraction" not in capsys.readouterr().err
    with pytest.raises(TinyLLMError, match="bpe:100"):  # misspelt or impossible: refused even where unused
        ShakespeareDataModule(path=str(folder), tokenizer="bpe:100")
