"""Tests for ``python -m tinyllm prepare``: corpora of every shape into token shards, deterministic, atomic, and
one-line errors for every bad input."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyllm.commands.prepare as prep
from tests.helpers.cli import (
    TINY,
    assert_one_line_error,
    describe,
    env_for_cli,
    load_ckpt,
    one_line_error,
    read_scalars,
    run_cli,
    run_main,
)
from tests.helpers.corpora import documents, folder_bytes, prepared, write_folder, write_jsonl
from tinyllm.core.checkpoint import checkpoint_step
from tinyllm.core.dataset import META_NAME, DatasetMeta, ShardWriter, open_dataset
from tinyllm.core.tokenizers import EOT, CharTokenizer, GPT2Tokenizer, tokenizer_from_state
from tinyllm.errors import TinyLLMError
from tinyllm.files import SHAKESPEARE
from tinyllm.training.data import ShakespeareDataModule


def tokens(folder: Path, split: str) -> np.ndarray:
    return np.concatenate(list(open_dataset(folder).shards(split))).astype(np.int64)


def meta_of(folder: Path) -> dict:
    return json.loads((folder / META_NAME).read_text())


def val_indices(n: int, f: float = 0.1) -> list[int]:
    return [i for i in range(n) if int((i + 1) * f) > int(i * f)]


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny pieces and tasks, so a small corpus goes through many cuts, batches and writes."""
    monkeypatch.setattr(prep, "PIECE_CHARS", 300)
    monkeypatch.setattr(prep, "TASK_CHARS", 700)
    monkeypatch.setattr(prep, "READ_BYTES", 256)


# ----------------------------------------------------------------------------- one text file


def test_char_on_tiny_shakespeare_is_exactly_what_fit_on_the_file_uses(data_dir: Path, tmp_path: Path, capsys):
    out = prepared(data_dir / "input.txt", tmp_path / "data" / "shakespeare", tokenizer="char")
    reference = ShakespeareDataModule(path=str(data_dir / "input.txt"), tokenizer="char")
    splits = reference.splits()
    np.testing.assert_array_equal(tokens(out, "train"), splits.train)
    np.testing.assert_array_equal(tokens(out, "val"), splits.val)
    meta = meta_of(out)
    assert list(meta) == sorted(DatasetMeta.__annotations__)  # every field the schema declares, and no other
    assert meta["vocab_size"] == 65 and meta["dtype"] == "uint16" and meta["separator"] is None
    assert meta["tokenizer"] == reference.tokenizer_state
    assert meta["split_rule"] == "position"
    assert {s: meta["splits"][s]["tokens"] for s in ("train", "val")} == {"train": 1_003_854, "val": 111_540}
    assert {s: meta["splits"][s]["bytes"] for s in ("train", "val")} == {"train": 1_003_854, "val": 111_540}
    assert meta["sources"] == [{"name": "input.txt", "bytes": 1_115_394, "sha256": SHAKESPEARE.sha256}]
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train_000000.bin", "val_000000.bin"]
    assert (out / "train_000000.bin").stat().st_size == 2 * 1_003_854
    printed = capsys.readouterr()
    assert "1,003,854 tokens" in printed.out and "MB/s" in printed.out
    assert "tokenize" in printed.err  # the progress bar, on stderr


def test_gpt2_on_one_file_cut_in_pieces_equals_encoding_it_whole(data_dir: Path, tmp_path: Path, small_pieces):
    text = "".join(d + ("\n\n" if i % 3 else "\n") + ("  indented   line\r\n" if i % 5 == 0 else "")
                   for i, d in enumerate(documents(60)))  # fmt: skip
    src = tmp_path / "one.txt"
    src.write_bytes(text.encode("utf-8"))
    out = prepared(src, tmp_path / "gpt2", tokenizer="gpt2", workers=2)
    splits = ShakespeareDataModule(path=str(src), tokenizer="gpt2").splits()
    np.testing.assert_array_equal(tokens(out, "train"), splits.train)
    np.testing.assert_array_equal(tokens(out, "val"), splits.val)
    meta = meta_of(out)
    n_train = int(len(text) * 0.9)
    assert meta["splits"]["train"]["bytes"] == len(text[:n_train].encode()) and meta["eot_id"] == 50256


def test_safe_cuts_keep_gpt2_tokens(gpt2: GPT2Tokenizer):
    rng = np.random.default_rng(0)
    parts = ["word", "Another", "x", "42", "!", ".", " ", "  ", "\n", "\n\n", " \n", "\t", "é", "'s", "\r\n"]
    text = "".join(rng.choice(parts, size=20_000))
    pieces = list(prep.repiece([text[i : i + 999] for i in range(0, len(text), 999)], size=200))
    assert "".join(pieces) == text and max(map(len, pieces)) <= 200 and len(pieces) > 100
    assert [t for p in pieces for t in gpt2.encode(p)] == gpt2.encode(text)


# ----------------------------------------------------------------------------- folders, jsonl, gz


def test_a_folder_of_txt_files_char(tmp_path: Path, small_pieces):
    docs = documents(25)
    root = write_folder(tmp_path / "corpus", docs)
    (root / ".hidden.txt").write_text("not me")
    (root / "part-0" / "notes.md").write_text("nor me")
    (root / ".git").mkdir()
    (root / ".git" / "x.txt").write_text("nor me")
    out = prepared(root, tmp_path / "data" / "folder", tokenizer="char")
    meta = meta_of(out)
    val = val_indices(25)
    assert val == [9, 19]
    tok = CharTokenizer(meta["tokenizer"]["chars"])
    assert tok.chars == "".join(sorted(set("".join(docs)) | {"\n"}))
    train_docs = [d for i, d in enumerate(docs) if i not in val]
    assert tok.decode(tokens(out, "train").tolist()) == "\n\n".join(train_docs)
    assert tok.decode(tokens(out, "val").tolist()) == "\n\n".join(docs[i] for i in val)
    assert meta["separator"] == "\n\n" and meta["split_rule"] == "documents" and meta["eot_id"] is None
    assert meta["splits"]["train"]["documents"] == 23 and meta["splits"]["val"]["documents"] == 2
    assert meta["splits"]["val"]["bytes"] == meta["splits"]["val"]["tokens"]  # ASCII: a byte a token
    names = [s["name"] for s in meta["sources"]]
    assert names == sorted(names) and len(names) == 25 and names[3] == "corpus/part-0/doc-003.txt.gz"


def test_jsonl_gpt2_documents_are_separated_by_end_of_text(tmp_path: Path, gpt2: GPT2Tokenizer):
    docs = documents(12, seed=1)
    docs[4] = "naïve café — 東京 ☃\n" + docs[4]
    path = write_jsonl(tmp_path / "c.jsonl", docs)
    with open(path, "a", encoding="utf-8") as f:  # blank lines and empty texts are no documents
        f.write("\n" + json.dumps({"text": ""}) + "\n")
    out = prepared(path, tmp_path / "j", tokenizer="gpt2")
    meta = meta_of(out)
    assert meta["separator"] == EOT and meta["eot_id"] == 50256
    train_docs = [d for i, d in enumerate(docs) if i != 9]
    expected = [t for d in train_docs for t in [50256, *gpt2.encode(d)]][1:]
    assert tokens(out, "train").tolist() == expected
    assert tokens(out, "val").tolist() == gpt2.encode(docs[9])
    assert meta["splits"]["train"]["bytes"] == sum(len(d.encode()) for d in train_docs)  # end-of-text is no text
    assert meta["splits"]["train"]["documents"] == 11

    gz = write_jsonl(tmp_path / "c2.jsonl.gz", docs + [""], gz=True)
    out_gz = prepared(gz, tmp_path / "jgz", tokenizer="gpt2")
    np.testing.assert_array_equal(tokens(out_gz, "train"), tokens(out, "train"))
    assert meta_of(out_gz)["sources"] == [{"name": "c2.jsonl.gz", "bytes": gz.stat().st_size,
                                           "sha256": hashlib.sha256(gz.read_bytes()).hexdigest()}]  # fmt: skip


def test_jsonl_text_field_and_several_inputs(tmp_path: Path):
    a = write_jsonl(tmp_path / "a.jsonl", documents(6, seed=2), field="content")
    b = tmp_path / "b.txt"
    b.write_text("A plain text file is one document.\n")
    out = prepared([a, b], tmp_path / "ab", tokenizer="char", text_field="content", val_fraction=0.3)
    meta = meta_of(out)
    assert [s["name"] for s in meta["sources"]] == ["a.jsonl", "b.txt"]
    assert meta["splits"]["val"]["documents"] == len(val_indices(7, 0.3)) == 2
    assert meta["options"]["text_field"] == "content"


def test_few_documents_still_validate_on_one_and_say_its_share(tmp_path: Path, capsys):
    docs = documents(5, seed=3)
    docs[-1] = " ".join([docs[-1]] * 4)  # a long last document: the validation split is far above 10%
    out = prepared(write_jsonl(tmp_path / "five.jsonl", docs), tmp_path / "five", tokenizer="char")
    tok = CharTokenizer(meta_of(out)["tokenizer"]["chars"])
    assert tok.decode(tokens(out, "val").tolist()) == docs[-1]  # the rule picks none: the last document
    share = len(docs[-1]) / sum(map(len, docs))
    assert f"validation holds {share:.0%} of the text, not 10%" in capsys.readouterr().err
    prepared(write_jsonl(tmp_path / "one.jsonl", ["".join(docs)]), tmp_path / "one", tokenizer="char")
    assert "validation holds" not in capsys.readouterr().err  # one document: split by position, 10%


def test_suffixes_are_read_in_any_case(tmp_path: Path):
    docs = documents(10, seed=7)
    out = prepared(write_jsonl(tmp_path / "SHOUTED.JSONL", docs), tmp_path / "upper", tokenizer="char")
    assert meta_of(out)["splits"]["train"]["documents"] == 9  # one document a line, not one text of JSON


def test_a_file_given_twice_is_refused_and_a_copy_is_noted(tmp_path: Path, capsys):
    root = write_folder(tmp_path / "corpus", documents(12, seed=6))
    one = sorted(root.rglob("*.txt*"))[0]
    with pytest.raises(TinyLLMError) as e:  # the folder holds it, and it is named again
        prepared([root, one], tmp_path / "twice", tokenizer="char")
    assert "among the inputs twice" in one_line_error(e) and not (tmp_path / "twice").exists()
    copy = tmp_path / f"copy{''.join(one.suffixes)}"
    copy.write_bytes(one.read_bytes())
    prepared([root, copy], tmp_path / "copied", tokenizer="char")
    assert f"{copy.name} has the same content as corpus/" in capsys.readouterr().err


def test_shards_split_the_stream_where_shard_tokens_says(tmp_path: Path):
    root = write_folder(tmp_path / "corpus", documents(30, seed=4))
    whole = prepared(root, tmp_path / "whole", tokenizer="char")
    sharded = prepared(root, tmp_path / "sharded", tokenizer="char", shard_tokens=1000)
    meta = meta_of(sharded)
    counts = [s["tokens"] for s in meta["splits"]["train"]["shards"]]
    assert len(counts) > 3 and all(c == 1000 for c in counts[:-1]) and 0 < counts[-1] <= 1000
    assert [s["file"] for s in meta["splits"]["train"]["shards"]][:2] == ["train_000000.bin", "train_000001.bin"]
    np.testing.assert_array_equal(tokens(sharded, "train"), tokens(whole, "train"))
    np.testing.assert_array_equal(tokens(sharded, "val"), tokens(whole, "val"))


def test_bpe_trains_on_the_training_split_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    docs = documents(40, seed=5)
    seen: list[str] = []
    real = prep.train_bpe

    def recording(texts, vocab_size):
        def tee():
            for t in texts:
                seen.append(t)
                yield t

        return real(tee(), vocab_size)

    monkeypatch.setattr(prep, "train_bpe", recording)
    out = prepared(write_jsonl(tmp_path / "c.jsonl", docs), tmp_path / "bpe", tokenizer="bpe:300")
    val = set(val_indices(40))
    assert seen == [d for i, d in enumerate(docs) if i not in val]
    meta = meta_of(out)
    assert meta["tokenizer"] == {"kind": "bpe", "tokenizer_json_file": "tokenizer.json"}
    assert meta["vocab_size"] == 300 and meta["separator"] == EOT
    state = open_dataset(out).tokenizer_state()
    assert state["tokenizer_json"] == (out / "tokenizer.json").read_text(encoding="utf-8")
    tok = tokenizer_from_state(state)
    assert tok.decode(tokens(out, "val").tolist()) == EOT.join(docs[i] for i in sorted(val))


# ----------------------------------------------------------------------------- deterministic, atomic


@pytest.mark.parametrize("kind", ["char", "gpt2", "bpe:300"])
def test_same_inputs_give_the_same_bytes(tmp_path: Path, kind: str, small_pieces, data_dir: Path):
    root = write_folder(tmp_path / "corpus", documents(30, seed=6))
    a = prepared(root, tmp_path / "a", tokenizer=kind, workers=1)
    b = prepared(root, tmp_path / "b", tokenizer=kind, workers=2)
    assert folder_bytes(a) == folder_bytes(b)
    assert len(meta_of(a)["splits"]["train"]["shards"]) == 1


def test_an_interrupted_prepare_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_pieces):
    root = write_folder(tmp_path / "corpus", documents(30, seed=7))
    out = tmp_path / "data" / "ds"
    real, calls = ShardWriter.write, [0]

    def write_then_fail(self, ids):
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt  # Ctrl-C half-way
        real(self, ids)

    monkeypatch.setattr(ShardWriter, "write", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        prepared(root, out)
    assert calls[0] == 5
    assert not out.exists() and list(out.parent.iterdir()) == []  # no --out, no partial folder
    monkeypatch.setattr(ShardWriter, "write", real)
    prepared(root, out)  # running again starts over
    assert open_dataset(out).split_tokens("train") > 0


def test_a_killed_prepare_is_cleaned_up_by_the_next(tmp_path: Path):
    code = "import os; print(os.getpid())"
    gone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    stale = tmp_path / f".ds.partial-{int(gone.stdout)}-abc123"
    stale.mkdir()
    (stale / "train_000000.bin").write_bytes(b"\0" * 10)
    mine = tmp_path / f".ds.partial-{os.getpid()}-def456"  # a live process's: left alone
    mine.mkdir()
    src = tmp_path / "a.txt"
    src.write_text("some text to prepare, long enough\n" * 10)
    prepared(src, tmp_path / "ds")
    assert not stale.exists() and mine.exists() and (tmp_path / "ds" / META_NAME).exists()


def test_an_existing_out(tmp_path: Path, capsys):
    src = tmp_path / "a.txt"
    src.write_text("some text to prepare, long enough\n" * 10)
    out = prepared(src, tmp_path / "ds")
    before = folder_bytes(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    prepared(src, out)  # the same dataset: nothing to do
    assert "already holds this prepared dataset" in capsys.readouterr().out
    assert folder_bytes(out) == before and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes

    meta = (out / META_NAME).read_bytes()
    (out / META_NAME).write_text("{oops")  # damaged: preparing the same dataset again must not be the advice
    with pytest.raises(TinyLLMError) as e:
        prepared(src, out)
    assert "corrupt" in one_line_error(e) and f"delete {out} and prepare it again" in one_line_error(e)
    (out / META_NAME).write_bytes(meta)

    with pytest.raises(TinyLLMError) as e:
        prepared(src, out, val_fraction=0.2)
    assert "another prepared dataset" in one_line_error(e) and "delete" in one_line_error(e)
    src.write_text("other text\n" * 10)
    with pytest.raises(TinyLLMError):
        prepared(src, out)
    assert folder_bytes(out) == before

    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(TinyLLMError) as e:
        prepared(src, other)
    assert "already exists" in one_line_error(e) and "another --out" in one_line_error(e)
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    with pytest.raises(TinyLLMError) as e:
        prepared(src, src)
    assert "not a folder" in one_line_error(e)


# ----------------------------------------------------------------------------- bad input: one line each


def _bad_utf8(tmp_path: Path) -> tuple[Path, str]:
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"a" * 1000 + "é".encode("latin-1") + b"b" * 100)
    return p, "byte 1,000"


def _bad_utf8_gz(tmp_path: Path) -> tuple[Path, str]:
    p = tmp_path / "latin1.txt.gz"
    p.write_bytes(gzip.compress(b"ok\n" * 700 + b"\xff"))
    return p, "byte 2,100 of the decompressed text"


def _gz_of(tmp_path: Path, damage) -> Path:
    """A .txt.gz damaged by ``damage`` past its first block (an interrupted download, bytes appended)."""
    p = tmp_path / "cut.txt.gz"
    p.write_bytes(damage(gzip.compress("".join(f"line {i}\n" for i in range(2000)).encode())))
    return p


def _jsonl(tmp_path: Path, *lines: str) -> Path:
    p = tmp_path / "c.jsonl"
    p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return p


BAD_INPUTS = {
    "empty-file": (lambda t: (t / "e.txt", (t / "e.txt").write_text(""))[0], {}, "empty"),
    "empty-folder": (lambda t: ((t / "f").mkdir(), t / "f")[1], {}, "empty"),
    "folder-of-other-files": (lambda t: ((t / "f").mkdir(), (t / "f" / "a.md").write_text("x"), t / "f")[2], {},
                              "empty"),  # fmt: skip
    "empty-jsonl": (lambda t: _jsonl(t, '{"text": ""}', ""), {}, "empty"),
    "missing-input": (lambda t: t / "nope.txt", {}, "does not exist"),
    "jsonl-without-field": (lambda t: _jsonl(t, '{"text": "a"}', '{"body": "b"}'), {}, "line 2 has no 'text' field"),
    "jsonl-other-field": (lambda t: _jsonl(t, '{"text": "a"}'), {"text_field": "content"}, "--text_field"),
    "jsonl-not-json": (lambda t: _jsonl(t, '{"text": "a"}', "{oops"), {}, "line 2 is not JSON"),
    "jsonl-not-a-string": (lambda t: _jsonl(t, '{"text": 3}'), {}, "not a string"),
    "jsonl-null-text": (lambda t: _jsonl(t, '{"text": null}'), {}, "'text' is null, not a string: fix or drop"),
    "jsonl-not-an-object": (lambda t: _jsonl(t, '[1, 2]'), {}, "line 1 is a JSON list, not an object"),
    "jsonl-lone-surrogate": (lambda t: _jsonl(t, '{"text": "ok"}', '{"text": "a\\ud800b"}'), {},
                             "line 2: 'text' holds a lone surrogate"),  # fmt: skip
    "jsonl-not-utf8": (lambda t: (t / "c.jsonl", (t / "c.jsonl").write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n'))[0],
                       {}, "line 2 is not UTF-8"),  # fmt: skip
    "not-utf8": (lambda t: _bad_utf8(t)[0], {}, "at byte 1,000):"),
    "not-utf8-gz": (lambda t: _bad_utf8_gz(t)[0], {}, "byte 2,100"),
    "not-gzip": (lambda t: (t / "x.txt.gz", (t / "x.txt.gz").write_bytes(b"plain text, no gzip"))[0], {}, ".gz"),
    "not-gzip-truncated": (lambda t: _gz_of(t, lambda z: z[: len(z) // 2]), {}, "not a valid .gz"),
    "not-gzip-junk-after": (lambda t: _gz_of(t, lambda z: z + b"garbage"), {}, "not a valid .gz"),
    "one-character": (lambda t: (t / "a.txt", (t / "a.txt").write_text("a"))[0], {}, "train split is empty"),
    "vocab-too-large": (lambda t: (t / "a.txt", (t / "a.txt").write_text("tiny text\n" * 20))[0],
                        {"tokenizer": "bpe:5000"}, "supports only"),  # fmt: skip
    "vocab-below-bytes": (lambda t: (t / "a.txt", (t / "a.txt").write_text("x"))[0], {"tokenizer": "bpe:100"}, "257"),
    "unknown-tokenizer": (lambda t: t / "a.txt", {"tokenizer": "wordpiece"}, "wordpiece"),
    "bad-val-fraction": (lambda t: t / "a.txt", {"val_fraction": 1.0}, "val_fraction"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_error_and_prepares_nothing(tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(prep, "READ_BYTES", 64)  # the byte offset must survive block boundaries
    make, options, word = BAD_INPUTS[case]
    src = make(tmp_path)
    out = tmp_path / "data" / "ds"
    with pytest.raises(TinyLLMError) as e:
        prepared(src, out, **options)
    msg = one_line_error(e)
    assert word in msg
    if case.startswith(("not-utf8", "jsonl-", "not-gzip")):
        assert str(src) in msg  # the file is named
    assert not out.exists() and not any(out.parent.glob(".ds.partial-*"))


def test_a_bad_input_through_the_cli_is_one_line_and_exit_2(tmp_path: Path):
    src, where = _bad_utf8(tmp_path)
    proc = run_main("prepare", "--inputs", src, "--out", tmp_path / "ds", cwd=tmp_path)
    assert_one_line_error(proc, str(src), where, "UTF-8")
    assert not (tmp_path / "ds").exists()


def test_a_list_of_inputs_through_the_cli(tmp_path: Path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("first document, with some words\n" * 5)
    b.write_text("second document, other words\n" * 5)
    proc = run_main("prepare", "--inputs", f"[{a},{b}]", "--out", tmp_path / "ab", "--workers", "1", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert [s["name"] for s in meta_of(tmp_path / "ab")["sources"]] == ["a.txt", "b.txt"]
    assert "prepared" in proc.stdout


def test_an_out_that_cannot_be_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    src = tmp_path / "a.txt"
    src.write_text("text\n" * 10)
    with pytest.raises(TinyLLMError) as e:
        prepared(src, src / "ds")  # under a file
    assert "not a folder" in one_line_error(e)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes anywhere: refuse the way a read-only folder would

        def refuse(self, *args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

        monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(TinyLLMError) as e:
        prepared(src, locked / "ds")
    msg = one_line_error(e)
    assert "cannot create" in msg and "Permission denied" in msg and str(locked / "ds") in msg


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_pieces):
    root = write_folder(tmp_path / "corpus", documents(30, seed=8))
    real, calls = ShardWriter.write, [0]

    def fill_up(self, ids):
        calls[0] += 1
        if calls[0] == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, ids)

    monkeypatch.setattr(ShardWriter, "write", fill_up)
    out = tmp_path / "data" / "ds"
    with pytest.raises(TinyLLMError) as e:
        prepared(root, out)
    msg = one_line_error(e)
    assert "No space left on device" in msg and "train_000000.bin" in msg and "free some space" in msg
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_a_really_full_disk(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                                           capture_output=True, check=False).returncode != 0:  # fmt: skip
        pytest.skip("cannot mount a small tmpfs here")
    try:
        src = tmp_path / "big.txt"
        src.write_text("a line of text that fills the disk\n" * 10_000)  # 350 kB: 700 kB of uint16 tokens
        with pytest.raises(TinyLLMError) as e:
            prepared(src, mnt / "ds")
        msg = one_line_error(e)
        assert "No space left on device" in msg and str(mnt) in msg
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["char", "bpe:300"])
def test_prepare_fit_generate_export_through_the_cli(tmp_path: Path, kind: str):
    docs = documents(80, seed=9)
    docs[0] = "ROMEO: " + docs[0]  # the samples' prompt is in the vocabulary
    root = write_folder(tmp_path / "corpus", docs)
    proc = run_cli("prepare", "--inputs", root, "--out", "data/corpus", "--tokenizer", kind, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "prepared data/corpus" in proc.stdout
    meta = meta_of(tmp_path / "data" / "corpus")
    proc = run_cli("fit", "--config", TINY, "--data.path", "data/corpus", "--trainer.max_steps", "4",
                   "--trainer.val_check_interval", "4", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    ckpt = load_ckpt(tmp_path / "checkpoints" / "tiny" / "best.ckpt")
    hp = ckpt["hyper_parameters"]
    assert hp["arch"]["vocab_size"] == meta["vocab_size"]
    # The checkpoint's tokenizer is the folder's, exactly (generate and export rebuild it from there).
    assert hp["tokenizer"] == open_dataset(tmp_path / "data" / "corpus").tokenizer_state()
    assert tokenizer_from_state(hp["tokenizer"]).vocab_size == meta["vocab_size"]
    # Bits per byte, on the scale every tokenizer shares: val_loss (nats/token) / ln 2 / (bytes per token).
    scalars = read_scalars(tmp_path / "logs" / "tiny")
    bytes_per_token = meta["splits"]["val"]["bytes"] / meta["splits"]["val"]["tokens"]
    assert scalars["val_bpb"][-1][1] == pytest.approx(scalars["val_loss"][-1][1] / math.log(2) / bytes_per_token, rel=1e-5)
    if kind == "char":
        return  # char checkpoints generate and export elsewhere (tests/commands, tests/formats)
    # The checkpoint decodes by itself: generate, and export to Hugging Face (checked with transformers) and GGUF.
    proc = run_cli("generate", "--ckpt_path", "checkpoints/tiny/last.ckpt", "--max_new_tokens", "12", "--prompt",
                   "ROMEO:", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.startswith("ROMEO:"), describe(proc)
    proc = run_cli("export", "--ckpt_path", "checkpoints/tiny/last.ckpt", "--out_dir", "hf", "--measure", "false",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    proc = run_cli("export", "--ckpt_path", "checkpoints/tiny/last.ckpt", "--out_dir", "gguf", "--format", "gguf",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0 and any((tmp_path / "gguf").glob("*.gguf")), describe(proc)


@pytest.mark.slow
def test_resuming_on_a_folder_of_another_tokenizer_is_one_line_and_changes_nothing(tmp_path: Path):
    root = write_folder(tmp_path / "corpus", ["ROMEO: " + d for d in documents(80, seed=4)])
    for kind, name in (("char", "char"), ("bpe:300", "bpe")):
        prepared(root, tmp_path / "data" / name, tokenizer=kind)
    first = run_cli("fit", "--config", TINY, "--data.path", "data/char", "--trainer.max_steps", "8", cwd=tmp_path)
    assert first.returncode == 0, describe(first)
    before = (tmp_path / "checkpoints/tiny/last.ckpt").read_bytes()
    proc = run_cli("fit", "--config", TINY, "--data.path", "data/bpe", "--trainer.max_steps", "16", "--ckpt_path",
                   "last", cwd=tmp_path)  # fmt: skip
    assert_one_line_error(proc, "tokenizer")
    assert (tmp_path / "checkpoints/tiny/last.ckpt").read_bytes() == before


@pytest.mark.slow
def test_a_dataset_and_a_checkpoint_named_from_home(tmp_path: Path):
    """``~`` in --data.path and --ckpt_path (a YAML value, or after an =, which no shell expands) means $HOME."""
    home, work = tmp_path / "home", tmp_path / "home" / "work"
    work.mkdir(parents=True)
    prepared(write_folder(tmp_path / "corpus", ["ROMEO: " + d for d in documents(80, seed=5)]), home / "ds",
             tokenizer="bpe:300")  # fmt: skip
    env = env_for_cli(HOME=str(home))
    fit = ["fit", "--config", TINY, "--data.path=~/ds", "--trainer.precision", "32-true"]
    for more in (["--trainer.max_steps", "4"], ["--trainer.max_steps", "8", "--ckpt_path", "last"]):
        proc = run_cli(*fit, *more, cwd=work, env=env)
        assert proc.returncode == 0, describe(proc)
    assert checkpoint_step(load_ckpt(work / "checkpoints/tiny/last.ckpt")) == 8  # resumed, not refused
    proc = run_cli("validate", "--config", TINY, "--data.path=~/ds", "--ckpt_path=~/work/checkpoints/tiny/last.ckpt",
                   cwd=work, env=env)  # fmt: skip
    assert proc.returncode == 0 and "val" in proc.stdout, describe(proc)
