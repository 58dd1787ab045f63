"""Tests for tinyllm.files: finding, downloading and verifying the data files, atomic writes (no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import pytest

import tinyllm.files
from tests.helpers.cli import one_line_error
from tinyllm.core.tokenizers import tokenizer_from_state
from tinyllm.errors import TinyLLMError
from tinyllm.files import (
    GPT2_RANKS,
    SHAKESPEARE,
    _tiktoken_cache_path,
    atomic_write_bytes,
    ensure_file,
    gpt2_ranks_path,
)
from tinyllm.training.data import ShakespeareDataModule


def test_missing_shakespeare_without_network(no_network: Path, empty_dir: Path, monkeypatch: pytest.MonkeyPatch):
    dm = ShakespeareDataModule(data_dir=str(empty_dir))
    with pytest.raises(TinyLLMError) as e:
        dm.splits()
    msg = one_line_error(e)
    assert "input.txt" in msg
    assert str(empty_dir.resolve() / "input.txt") in msg
    assert "give the data_dir option a folder" in msg and "TINYLLM_DATA_DIR" not in msg  # the setting the user used
    monkeypatch.setenv("TINYLLM_DATA_DIR", str(empty_dir))
    with pytest.raises(TinyLLMError) as e:
        ShakespeareDataModule().splits()
    assert "set TINYLLM_DATA_DIR to a folder holding input.txt" in one_line_error(e)
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


def test_a_record_is_written_whole_and_a_damaged_one_is_one_line(tmp_path: Path):
    from tinyllm.files import read_record, write_record

    write_record(tmp_path / "results.json", {"val_loss": [[0, 4.2]], "steps": 24})
    assert read_record(tmp_path / "results.json") == {"val_loss": [[0, 4.2]], "steps": 24}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left beside it
    (tmp_path / "results.json").write_text('{"val_loss": [[0, 4.')  # a plain write cut short
    with pytest.raises(TinyLLMError, match="results.json is damaged .*delete it to measure that run again"):
        read_record(tmp_path / "results.json")
    (tmp_path / "results.json").write_text('{"variant": "vanilla"}')  # edited by hand: valid JSON, not the record
    assert read_record(tmp_path / "results.json", dict, ("variant",)) == {"variant": "vanilla"}
    for kind, keys in [(dict, ("val_loss",)), (list, ()), ((int, float), ())]:
        with pytest.raises(TinyLLMError, match="is damaged .not the record tinyllm writes there"):
            read_record(tmp_path / "results.json", kind, keys)


def test_a_record_of_true_is_a_number_nowhere_but_any_value_where_any_is_asked(tmp_path: Path):
    from tinyllm.files import read_record, write_record

    write_record(tmp_path / "seconds.txt", True)
    with pytest.raises(TinyLLMError, match="is damaged .not the record tinyllm writes there"):
        read_record(tmp_path / "seconds.txt", (int, float))  # isinstance(True, int) holds; a time it is not
    assert read_record(tmp_path / "seconds.txt") is True and read_record(tmp_path / "seconds.txt", bool) is True
    with pytest.raises(TinyLLMError, match="is damaged .not the record tinyllm writes there"):
        read_record(tmp_path / "seconds.txt", object, ("variant",))  # keys are asked of an object only


def test_a_user_path_expands_home_and_refuses_an_unknown_user_in_one_line(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    from tinyllm.files import user_path

    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_path("~/runs/x.ckpt") == tmp_path / "runs/x.ckpt" and user_path("runs/~x") == Path("runs/~x")
    with pytest.raises(TinyLLMError) as e:
        user_path("~no-such-user-here/x.ckpt")
    assert one_line_error(e).startswith("~no-such-user-here/x.ckpt: ") and "without ~" in one_line_error(e)
