"""Every shipped recipe in configs/ parses, builds its model, data and trainer, and trains two steps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tinyllm.training.cli import build_cli, expand_configs

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
# Only what makes two steps quick: the architecture, schedule and optimizer stay the recipe's own.
QUICK = ["--trainer.max_steps", "2", "--trainer.max_time", "null", "--trainer.val_check_interval", "2",
         "--trainer.limit_val_batches", "1", "--data.batch_size", "2", "--trainer.precision", "32-true",
         "--trainer.accumulate_grad_batches", "1", "--samples", "null", "--progress_bar", "null",
         "--trainer.enable_model_summary", "false"]  # fmt: skip


def test_every_config_is_tested():
    assert {p.name for p in CONFIGS} >= {"cpu.yaml", "quick.yaml", "modern.yaml", "vanilla.yaml", "modern_bpe.yaml"}


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_trains_two_steps(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["fit", "--config", str(config), "--name", "t", *QUICK])
    assert cli.trainer.global_step == 2
    assert (tmp_path / "checkpoints/t/last.ckpt").is_file()
    recipe = yaml.safe_load(config.read_text())
    for key, value in (recipe.get("model", {}).get("arch") or {}).items():  # the recipe's own words win
        assert cli.model.model.config.to_dict()[key] == value, key
    assert cli.model.model.config.vocab_size == cli.datamodule.vocab_size  # the vocabulary comes from the data


def test_a_recipe_starts_from_the_one_it_names_and_states_only_what_differs(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("trainer:\n  max_steps: 7\n  gradient_clip_val: 1.0\n  precision: 32-true\n"
                                        "model:\n  lr: 0.01\n  arch:\n    n_layer: 1\n    n_embd: 32\n    n_head: 2\n")
    (tmp_path / "child.yaml").write_text("config: base.yaml\ntrainer:\n  max_steps: 9\n")
    args = expand_configs(["fit", "--config", str(tmp_path / "child.yaml"), "--name", "x"])
    assert args[:3] == ["fit", "--config", str(tmp_path / "base.yaml")] and args[-2:] == ["--name", "x"]
    assert yaml.safe_load(args[4]) == {"trainer": {"max_steps": 9}}  # the child without its `config:` line
    cli = build_cli(["--config", str(tmp_path / "child.yaml")], run=False)
    # Merged key by key: the child's max_steps, the base's clipping and learning rate.
    assert (cli.trainer.max_steps, cli.trainer.gradient_clip_val, cli.model.lr) == (9, 1.0, 0.01)


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"arch": {"n_head": 5}} -> {"arch.n_head": 5}"""
    out: dict[str, object] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def test_quick_is_the_five_minute_rung_of_cpu_bpe():
    quick = yaml.safe_load((CONFIGS[0].parent / "quick.yaml").read_text())
    assert quick["config"] == "cpu_bpe.yaml" and set(quick) == {"config", "name", "model", "data", "trainer"}
    assert quick["trainer"] == {"max_time": "00:00:05:00"}
    # Exactly the options of the ladder's 5-minute rung (results/budgets.md), no more and no fewer.
    budgets = (CONFIGS[0].parents[1] / "results/budgets.md").read_text()
    rung = next(line for line in budgets.splitlines() if line.startswith("| 5 min |"))
    stated = {f"--{group}.{key}={value}" for group in ("model", "data") for key, value in _flat(quick[group]).items()}
    assert stated == set(re.findall(r"`(--[^`=]+=[^`]+)`", rung))
    assert stated == {"--model.arch.n_embd=160", "--model.arch.n_head=5", "--model.arch.dropout=0.1",
                      "--data.bpe_dropout=0.05"}
    cli = build_cli(["--config", str(CONFIGS[0].parent / "quick.yaml")], run=False)
    assert cli.datamodule.tokenizer_kind == "bpe:1024"  # cpu_bpe.yaml's
    assert (cli.model.lr, cli.model.muon_lr, cli.model.min_lr) == (1e-3, 0.01, 0.0)  # cpu_bpe.yaml's
    assert (cli.model.arch.n_layer, cli.config.trainer.val_check_interval) == (4, 1000)  # cpu.yaml's
