"""``python -m tinyllm experiment budgets``: each rung a real fit by its deadline, tabled with a reference row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import TINY, assert_one_line_error, describe, run_cli, run_main
from tinyllm.commands.budgets import nats_per_byte, write_table
from tinyllm.commands.runs import seed_options


@pytest.mark.slow
def test_the_ladder_trains_each_budget_and_writes_the_table(tmp_path: Path):
    reference = tmp_path / "ref.json"
    reference.write_text(json.dumps({"label": "a reference", "run": "baby", "val_loss": 1.9, "steps": 20,
                                     "tokens": 1000, "wall_s": 9.0, "note": "measured by hand"}))  # fmt: skip
    proc = run_cli("experiment", "budgets", "--config", TINY, "--minutes", "[0.08]", "--reference", reference,
                   "--set", '["--samples=null", "--early_stopping=null"]', "--out", "res",
                   "--rung_set", '{"0.08": ["--model.arch.dropout=0.1"]}', cwd=tmp_path, timeout=180)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    (row,) = json.loads((tmp_path / "res/budgets.json").read_text())["rows"]
    assert row["name"] == "budget-0.08min-seed1337" and row["seed"] == 1337 and row["steps"] > 0 and row["val_loss"] > 0
    # The run's own clock, near its budget, and the whole process longer. That the last step, evaluation and checkpoint
    # fit inside the budget is tests/training/test_budget.py's, on a fake clock: on this real one, another test's
    # compiles on the same cores can slow the last step past the budget's margin.
    assert 0.5 * 0.08 * 60 <= row["train_s"] <= 0.08 * 60 + 1 and row["wall_s"] > row["train_s"]
    assert row["tokens"] == row["steps"] * 8 * 32  # batch 8 x block 32, no accumulation
    assert row["arch"]["dropout"] == 0.1 and row["options"][-1] == "--model.arch.dropout=0.1"  # the rung's own option
    table = (tmp_path / "res/budgets.md").read_text()
    assert f"| 0.08 min | **{nats_per_byte(row):.4f}** |" in table and "| baby | 1.9000 |" in table
    assert nats_per_byte(row) == pytest.approx(row["val_loss"], rel=1e-6)  # characters: a token is a byte
    assert "over the whole validation split, the last 10% of Tiny Shakespeare, in nats" in table
    # A second ladder in the same folder would mix runs: refused.
    again = run_cli("experiment", "budgets", "--config", TINY, "--minutes", "[0.08]", cwd=tmp_path, timeout=120)
    assert_one_line_error(again, "budget-0.08min")
    typo = run_main("experiment", "budgets", "--config", TINY, "--minutes", "[1]", "--rung_set", '{"30": []}',
                    cwd=tmp_path)  # fmt: skip
    assert_one_line_error(typo, "--rung_set", "30")


def test_the_table_gives_the_mean_and_spread_over_seeds(tmp_path: Path):
    def run(seed: int, loss: float, steps: int) -> dict:
        return {"budget_min": 5, "seed": seed, "val_loss": loss, "steps": steps, "tokens": steps * 2048,
                "tokens_per_s": 1000.0, "wall_s": 310.0, "options": [*seed_options(seed), "--samples=null"],
                "validation": "the whole validation split"}
    write_table([run(1, 1.40, 100), run(2, 1.42, 110), run(3, 1.44, 120)], "configs/cpu.yaml", None, tmp_path / "b.md")
    table = (tmp_path / "b.md").read_text()
    assert "| 5 min | **1.4200 ± 0.0200** | 110 | 0.23 M | 1,000 | 310 s | `--samples=null` |" in table
    assert "Seeds 1, 2, 3" in table


def test_the_table_gives_a_bpe_rungs_loss_per_byte_of_text_not_per_token(tmp_path: Path):
    row = {"budget_min": 5, "seed": 1, "val_loss": 3.5, "val_bpb": 2.25, "steps": 100, "tokens": 204_800,
           "tokens_per_s": 1000.0, "wall_s": 310.0, "options": [*seed_options(1), "--data.tokenizer=bpe:1024"],
           "validation": "the whole validation split"}
    write_table([row], "configs/cpu.yaml", None, tmp_path / "b.md")
    assert "| 5 min | **1.5596** | 100 |" in (tmp_path / "b.md").read_text()  # 2.25 bits × ln 2, not 3.5 a token


@pytest.mark.parametrize(("content", "words"), [
    ([1, 2], ["holds a list"]),
    ({"label": "nanoGPT", "run": "baby", "val_loss": 1.88, "steps": 2000, "tokens": 1536000}, ["'wall_s'"]),
    ({"label": "nanoGPT", "run": "baby", "val_loss": "low", "steps": 2000, "tokens": 1, "wall_s": 1}, ["'val_loss'"]),
])  # fmt: skip
def test_a_reference_row_is_checked_before_any_rung_trains(tmp_path: Path, content: object, words: list[str]):
    (tmp_path / "ref.json").write_text(json.dumps(content))
    proc = run_main("experiment", "budgets", "--config", TINY, "--minutes", "[0.08]", "--reference", "ref.json",
                    "--out", "out", cwd=tmp_path)  # fmt: skip
    assert_one_line_error(proc, "--reference", *words)
    assert not (tmp_path / "checkpoints").exists()  # refused before the first rung
