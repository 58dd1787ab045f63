"""Tests for tinyllm.core.dataset: the prepared folder's shards and meta.json, written and read back."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.cli import one_line_error
from tests.helpers.corpora import token_folder
from tinyllm.core.dataset import (
    META_NAME, VERSION, ShardFile, ShardWriter, Shards, is_dataset, meta_bytes, open_dataset, shard_name, split_text,
    token_dtype, train_chars,
)  # fmt: skip
from tinyllm.errors import TinyLLMError


def test_split_text_keeps_every_character_and_validates_the_last_fraction():
    text = "".join(chr(97 + i % 26) for i in range(1003))
    train, val = split_text(text, 0.1)
    assert train + val == text
    assert len(train) == train_chars(1003, 0.1) == 902 and val == text[902:]
    assert split_text(text, 0.0) == (text, "")


def test_token_dtype_is_uint16_up_to_65536_ids():
    assert token_dtype(65) == np.dtype("<u2")
    assert token_dtype(65_536) == np.dtype("<u2")
    assert token_dtype(65_537) == np.dtype("<u4")
    assert token_dtype(100_277) == np.dtype("<u4")


def test_shard_writer_rolls_over_and_never_writes_an_empty_shard(tmp_path: Path):
    w = ShardWriter(tmp_path, "train", np.dtype("<u2"), shard_tokens=10)
    w.write(np.arange(7))
    w.write(np.arange(7, 25))
    w.write(np.array([], dtype=np.int64))
    shards = w.close()
    assert shards == [{"file": "train_000000.bin", "tokens": 10}, {"file": "train_000001.bin", "tokens": 10},
                      {"file": "train_000002.bin", "tokens": 5}]  # fmt: skip
    assert w.tokens == 25
    raw = b"".join((tmp_path / s["file"]).read_bytes() for s in shards)
    assert raw == np.arange(25, dtype="<u2").tobytes()  # little-endian, headerless
    assert sorted(p.name for p in tmp_path.iterdir()) == [s["file"] for s in shards]

    exact = ShardWriter(tmp_path / "x", "val", np.dtype("<u4"), shard_tokens=5)
    (tmp_path / "x").mkdir()
    exact.write(np.arange(10))
    assert [s["tokens"] for s in exact.close()] == [5, 5]  # a full shard is not followed by an empty one
    assert (tmp_path / "x" / "val_000000.bin").read_bytes() == np.arange(5, dtype="<u4").tobytes()


def test_shard_writer_refuses_ids_that_do_not_fit(tmp_path: Path):
    w = ShardWriter(tmp_path, "train", np.dtype("<u2"), shard_tokens=10)
    with pytest.raises(ValueError, match="65536"):
        w.write(np.array([1, 65_536]))
    w.abort()


def make_folder(folder: Path, train: np.ndarray, val: np.ndarray, shard_tokens: int = 1000) -> Path:
    return token_folder(folder, train, val, shard_tokens, vocab_size=3, tokenizer={"kind": "char", "chars": "abc"})


def test_open_dataset_maps_the_shards(tmp_path: Path):
    train, val = np.arange(2500) % 3, np.arange(300) % 3
    folder = make_folder(tmp_path / "ds", train, val)
    assert is_dataset(folder) and not is_dataset(tmp_path) and not is_dataset(folder / META_NAME)
    ds = open_dataset(folder)
    assert ds.vocab_size == 3 and ds.dtype == np.dtype("<u2")
    assert ds.split_tokens("train") == 2500 and ds.split_bytes("val") == 300
    shards = ds.shards("train")
    assert len(shards) == 3 and shards.lengths() == [1000, 1000, 500]
    assert all(isinstance(s, ShardFile) for s in shards)  # read window by window, never loaded whole
    np.testing.assert_array_equal(np.concatenate(list(shards)), train)
    np.testing.assert_array_equal(ds.shards("val")[0], val)
    assert ds.tokenizer_state() == {"kind": "char", "chars": "abc"}


def test_shards_pickle_as_paths_not_data(tmp_path: Path):
    folder = make_folder(tmp_path / "ds", np.arange(100_000) % 3, np.arange(300) % 3, shard_tokens=100_000)
    shards = open_dataset(folder).shards("train")
    assert shards.lengths() == [100_000]  # opened
    blob = pickle.dumps(shards)
    assert len(blob) < 2_000  # a pickled array would carry its 200 kB
    back = pickle.loads(blob)
    assert isinstance(back, Shards) and isinstance(back[0], ShardFile)
    np.testing.assert_array_equal(back[0][:10], np.arange(10) % 3)


def test_a_token_id_beyond_the_vocabulary_is_named_with_its_shard(tmp_path: Path):
    folder = make_folder(tmp_path / "ds", np.arange(2500) % 3, np.arange(300) % 3)
    shard = folder / "train_000001.bin"
    damaged = np.fromfile(shard, dtype="<u2")
    damaged[10] = 40_000  # a flipped byte: an id the embedding table has no row for
    damaged.tofile(shard)
    shards = pickle.loads(pickle.dumps(open_dataset(folder).shards("train")))  # as a DataLoader worker gets them
    np.testing.assert_array_equal(shards[1][:10], np.arange(1000, 1010) % 3)  # the windows before it still read
    with pytest.raises(TinyLLMError, match="train_000001.bin holds token id 40000 .* vocabulary of 3.* prepare"):
        shards[1][5:20]


def test_meta_json_is_sorted_and_deterministic(tmp_path: Path):
    a = meta_bytes({"b": 1, "a": {"y": 2, "x": "é"}})
    assert a == meta_bytes({"a": {"x": "é", "y": 2}, "b": 1})
    assert json.loads(a) == {"a": {"x": "é", "y": 2}, "b": 1}


def test_bpe_tokenizer_json_is_read_back_from_its_file(tmp_path: Path):
    from tinyllm.core.tokenizers import build_tokenizer

    bpe = build_tokenizer("bpe:280", "a few words of text to learn merges from\n" * 20)
    folder = make_folder(tmp_path / "ds", np.arange(50) % 3, np.arange(50) % 3)
    meta = json.loads((folder / META_NAME).read_text())
    meta["tokenizer"] = {"kind": "bpe", "tokenizer_json_file": "tokenizer.json"}
    meta["vocab_size"] = bpe.vocab_size  # open_dataset checks it against the tokenizer's ids
    (folder / META_NAME).write_text(json.dumps(meta))
    (folder / "tokenizer.json").write_text(bpe.state()["tokenizer_json"])
    assert open_dataset(folder).tokenizer_state() == {"kind": "bpe", "tokenizer_json": bpe.state()["tokenizer_json"]}
    (folder / "tokenizer.json").write_text('{"damaged')
    with pytest.raises(TinyLLMError) as e:  # the dataset's advice, and where the file is: not a checkpoint's
        open_dataset(folder)
    assert str(folder / "tokenizer.json") in one_line_error(e) and "prepare the dataset again" in str(e.value)
    assert "export" not in str(e.value) and "checkpoint" not in str(e.value)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(TinyLLMError) as e:
        open_dataset(folder).tokenizer_state()
    assert "tokenizer.json" in one_line_error(e)
    meta["tokenizer"]["tokenizer_json_file"] = 5  # edited by hand: not a file name
    (folder / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(TinyLLMError, match="corrupt"):
        open_dataset(folder)


def _edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / META_NAME).read_text())
    change(meta)
    (folder / META_NAME).write_text(json.dumps(meta))


DAMAGES = {
    "no-meta": (lambda f: (f / META_NAME).unlink(), "no meta.json"),
    "not-json": (lambda f: (f / META_NAME).write_text("{ not json"), "corrupt"),
    "not-an-object": (lambda f: (f / META_NAME).write_text("[1, 2]"), "corrupt"),
    "other-version": (lambda f: _edit_meta(f, lambda m: m.update(version=VERSION + 1)), "version"),
    "other-format": (lambda f: _edit_meta(f, lambda m: m.update(format="nanogpt")), "format"),
    "no-splits": (lambda f: _edit_meta(f, lambda m: m.pop("splits")), "corrupt"),
    "bad-dtype": (lambda f: _edit_meta(f, lambda m: m.update(dtype="float32")), "corrupt"),
    "counts-disagree": (lambda f: _edit_meta(f, lambda m: m["splits"]["val"].update(tokens=7)), "corrupt"),
    "missing-shard": (lambda f: (f / shard_name("train", 1)).unlink(), "missing"),
    "truncated-shard": (lambda f: (f / shard_name("val", 0)).write_bytes(b"\0" * 10), "damaged"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_folder_is_one_line_error(tmp_path: Path, damage: str):
    folder = make_folder(tmp_path / "ds", np.arange(1500) % 3, np.arange(300) % 3)
    do, word = DAMAGES[damage]
    do(folder)
    with pytest.raises(TinyLLMError) as e:
        open_dataset(folder)
    msg = one_line_error(e)
    assert word in msg and str(folder) in msg
    assert "prepare" in msg  # what to do
