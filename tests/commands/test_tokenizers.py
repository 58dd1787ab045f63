"""``python -m tinyllm experiment tokenizers``: the same text, prepared per tokenizer, compared in bits per byte."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers.cli import TINY, assert_one_line_error, describe, run_cli, run_main
from tests.helpers.corpora import documents, write_folder


@pytest.mark.slow
def test_tokenizers_table_compares_bits_per_byte(tmp_path: Path):
    corpus = write_folder(tmp_path / "corpus", ["ROMEO: " + d for d in documents(60, seed=2)])
    proc = run_cli("experiment", "tokenizers", "--config", TINY, "--tokenizers", "[char, bpe:300]", "--minutes",
                   "0.04", "--inputs", corpus, "--out", "res", cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert "training with its tokenizer" not in proc.stderr, describe(proc)  # the experiment's own choice: no note
    rows = json.loads((tmp_path / "res/tokenizers.json").read_text())["rows"]
    assert [r["tokenizer"] for r in rows] == ["char", "bpe:300"] and rows[1]["vocab_size"] == 300
    for r in rows:
        (run,) = r["runs"]
        meta = json.loads((tmp_path / "data/tokenizers" / r["tokenizer"].replace(":", "") / "meta.json").read_text())
        per_token = meta["splits"]["val"]["bytes"] / meta["splits"]["val"]["tokens"]
        assert run["val_bpb"] == pytest.approx(run["val_loss"] / math.log(2) / per_token, rel=1e-5)
    table = (tmp_path / "res/tokenizers.md").read_text()
    assert "| `char` |" in table and "| `bpe:300` |" in table
    assert (tmp_path / "res/tokenizers.png").read_bytes()[:4] == b"\x89PNG"


def test_tokenizers_bad_options_are_one_line(tmp_path: Path):
    assert_one_line_error(run_main("experiment", "tokenizers", "--tokenizers", "[char, char]", cwd=tmp_path), "distinct")
    assert_one_line_error(run_main("experiment", "tokenizers", "--minutes", "0", cwd=tmp_path), "at least a second")
    late_typo = run_main("experiment", "tokenizers", "--tokenizers", "[char, bpe:10]", cwd=tmp_path)
    assert_one_line_error(late_typo, "bpe:10")  # before char trains, not after
    assert not any(tmp_path.iterdir())
