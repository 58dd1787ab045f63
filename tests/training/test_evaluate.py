"""Tests for tinyllm.training.evaluate: what a card says of the split it measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers.corpora import token_folder
from tinyllm.training.data import ShakespeareDataModule
from tinyllm.training.evaluate import held_out


def test_the_held_out_split_is_described_as_prepare_made_it(tmp_path: Path):
    ids = np.arange(400) % 100
    by_document = token_folder(tmp_path / "docs", ids, ids, split_rule="documents", options={"val_fraction": 0.1})
    data = ShakespeareDataModule(path=str(by_document), tokenizer="gpt2", val_fraction=0.2)
    assert held_out(data, "docs") == "the 1 held-out document of docs (about 1 in 10)"  # not "the last 20%"
    by_position = token_folder(tmp_path / "one", ids, ids, options={"val_fraction": 0.05})
    assert held_out(ShakespeareDataModule(path=str(by_position), tokenizer="gpt2"), "one") == "the last 5% of one"
    assert held_out(ShakespeareDataModule(val_fraction=0.2), "Tiny Shakespeare") == "the last 20% of Tiny Shakespeare"
