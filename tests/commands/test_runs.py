"""What every experiment shares: seeds, budgets, shipped configs, one run as its own process, the named defaults."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from tests.helpers.cli import TINY
from tinyllm.commands.budgets import budgets
from tinyllm.commands.experiment import swaps
from tinyllm.commands.runs import CPU_RECIPE, RESULTS, max_time, shipped, validation_split
from tinyllm.commands.scaling import scaling
from tinyllm.commands.tokenizers import tokenizers
from tinyllm.errors import TinyLLMError

EXPERIMENTS = {"budgets": budgets, "swaps": swaps, "tokenizers": tokenizers, "scaling": scaling}


def test_max_time_is_lightnings_format():
    assert max_time(1) == "00:00:01:00" and max_time(0.5) == "00:00:00:30" and max_time(90) == "00:01:30:00"


@pytest.mark.parametrize("command", ["budgets", "swaps", "tokenizers"])
@pytest.mark.parametrize("seeds", [[], [7, 7], [-1]])
def test_every_seeded_experiment_refuses_seeds_it_cannot_pair(command: str, seeds: list[int], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    run = EXPERIMENTS[command]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TinyLLMError, match=r"^--seeds must (list distinct seeds|be a seed from 0)"):
        run(seeds=seeds, out=str(tmp_path / "out"))
    assert not any(tmp_path.iterdir())  # refused before any run or folder


@pytest.mark.parametrize("command", ["budgets", "tokenizers", "scaling"])
@pytest.mark.parametrize("budget", [0.0, float("inf"), float("nan"), 0.001])  # 0.001 min: 0 whole seconds
def test_every_timed_experiment_refuses_a_budget_no_run_can_have(command: str, budget: float, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    run = EXPERIMENTS[command]
    monkeypatch.chdir(tmp_path)
    minutes = [budget] if command != "tokenizers" else budget
    with pytest.raises(TinyLLMError, match=r"^--minutes must list finite budgets of at least a second"):
        run(minutes=minutes, out=str(tmp_path / "out"))
    assert not any(tmp_path.iterdir())  # refused before any run or folder


@pytest.mark.parametrize("command", EXPERIMENTS)
def test_every_experiment_finds_a_shipped_config_from_any_folder_and_refuses_a_missing_one(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    run = EXPERIMENTS[command]
    monkeypatch.chdir(tmp_path)
    assert Path(shipped("configs/cpu.yaml")).is_file()  # tinyllm's own, though this folder has no configs/
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mine.yaml").write_text("model: {}\n")
    assert shipped("~/mine.yaml") == str(tmp_path / "mine.yaml")  # in a YAML or after an =, no shell expands ~
    (tmp_path / "mine.yaml").unlink()
    with pytest.raises(TinyLLMError, match=r"^--config configs/nope.yaml is not a file"):
        run(config="configs/nope.yaml", out=str(tmp_path / "out"))
    assert not any(tmp_path.iterdir())  # refused before any run or folder


def test_a_rung_that_logged_no_val_loss_is_one_line(fit_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import shutil
    import subprocess

    from torch.utils.tensorboard import SummaryWriter

    from tinyllm.commands import runs
    from tinyllm.training.metrics import VAL_LOSS

    def fit_without_validation(command: list[str]) -> subprocess.CompletedProcess:
        name = command[command.index("--name") + 1]
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        shutil.copy(fit_run.dir / "checkpoints/tiny/last.ckpt", tmp_path / "checkpoints" / name / "last.ckpt")
        with SummaryWriter(str(tmp_path / "logs" / name)) as writer:
            writer.add_scalar("train_loss", 3.0, 1)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runs.subprocess, "run", fit_without_validation)
    with pytest.raises(TinyLLMError, match=f"logged no {VAL_LOSS}"):
        runs.run_rung(str(TINY), 0.1, [], "rung")


@pytest.mark.parametrize(("data", "said"), [
    ({"path": None, "val_fraction": 0.1, "val_tokens": 1_048_576}, "the last 10% of Tiny Shakespeare"),
    ({"path": "corpus.txt", "val_fraction": 0.05, "val_tokens": None}, "the last 5% of corpus.txt"),
    ({"path": "corpus.txt", "val_fraction": 0.1, "val_tokens": 1000}, "corpus.txt, at most about 1,000 tokens of it"),
])  # fmt: skip
def test_the_table_names_the_text_each_val_loss_was_measured_on(data: dict, said: str):
    assert validation_split(data).endswith(said)


@pytest.mark.parametrize("command", EXPERIMENTS)
def test_every_experiment_writes_to_the_one_results_folder_by_default(command: str):
    assert inspect.signature(EXPERIMENTS[command]).parameters["out"].default == RESULTS


@pytest.mark.parametrize("command", ["budgets", "tokenizers", "scaling"])
def test_every_timed_experiment_trains_the_cpu_recipe_by_default(command: str):
    default = inspect.signature(EXPERIMENTS[command]).parameters["config"].default
    assert default == CPU_RECIPE and Path(shipped(default)).is_file()


@pytest.mark.parametrize("command", ["budgets", "scaling"])
def test_a_budget_given_twice_is_refused_before_any_run(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # it would train the first, then find its own run in the way of the second
    with pytest.raises(TinyLLMError, match=r"^--minutes lists a budget twice"):
        EXPERIMENTS[command](minutes=[1.0, 2.0, 1.0000001], out=str(tmp_path / "out"))  # one run name: 1min
    assert not any(tmp_path.iterdir())
