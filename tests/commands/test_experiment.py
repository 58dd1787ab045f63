"""Tests for ``python -m tinyllm experiment swaps``: controlled runs, a paired report, and resuming."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tests.helpers.cli import assert_one_line_error, describe, run_cli, run_main
from tinyllm.commands.experiment import EXPERIMENTS, OPTIMIZER_SWAPS, SWITCHES, VARIANTS, run_config, summarize


def _flatten(d: dict | list, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items() if isinstance(d, dict) else enumerate(d):
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, (dict, list)) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_variants_differ_only_in_their_switches_and_run_names(experiment):
    base = _flatten(run_config(experiment, "vanilla", 7))
    for variant in (v for v in VARIANTS if v not in OPTIMIZER_SWAPS):
        cfg = _flatten(run_config(experiment, variant, 7))
        assert cfg.keys() == base.keys()
        differs = {k for k in cfg if cfg[k] != base[k]}
        # Only architecture switches, and where the run writes (its name decides checkpoints/ and logs/).
        where = {k for k in differs if k == "name"}
        assert differs - where <= {f"model.arch.{s}" for s in SWITCHES}, variant
        assert bool(differs - where) == (variant != "vanilla"), variant
    # The optimizer swap: its architecture's run plus the optimizer, nothing else.
    cfg, modern = _flatten(run_config(experiment, "modern+muon", 7)), _flatten(run_config(experiment, "modern", 7))
    differs = {k for k in cfg.keys() | modern.keys() if cfg.get(k) != modern.get(k)}
    assert differs == {"name", "model.optimizer", "model.muon_lr"} and cfg["model.optimizer"] == "muon"
    cfg = run_config(experiment, "vanilla", 7)
    assert cfg["seed_everything"] == cfg["data"]["seed"] == 7  # same init seed and same batches for every variant


def test_summary_deltas_are_paired_by_seed():
    def run(variant, seed, final):
        return {"variant": variant, "seed": seed, "parameters": 10, "val_loss": [[5, 3.0], [10, final]],
                "seconds": 60.0, "tokens_per_s": 100.0}
    results = [run("vanilla", 1, 2.0), run("vanilla", 2, 2.4), run("modern", 1, 1.8), run("modern", 2, 2.3)]
    rows = {r["variant"]: r for r in summarize(results)}
    assert rows["modern"]["delta"] == pytest.approx([-0.2, -0.1])  # per seed, not mean minus mean
    assert rows["modern"]["curve"] == pytest.approx([3.0, 2.05])
    assert rows["vanilla"]["delta"] == [0.0, 0.0]
    assert statistics.stdev(rows["modern"]["delta"]) == pytest.approx(0.0707, abs=1e-4)


@pytest.mark.slow
def test_swaps_smoke_writes_table_plot_and_json_and_skips_finished_runs(tmp_path: Path):
    args = ("experiment", "swaps", "--preset", "smoke", "--seeds", "[1, 2]", "--out", "res")
    proc = run_cli(*args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, describe(proc)
    table = (tmp_path / "res/swaps.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == list(VARIANTS)
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert cells[0][-3] == "(baseline)" and all("±" in c[-3] for c in cells[1:])  # Δ with its spread over 2 seeds
    assert (tmp_path / "res/swaps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = json.loads((tmp_path / "res/swaps.json").read_text())["runs"]
    assert len(runs) == 2 * len(VARIANTS)
    steps = {tuple(s for s, _ in r["val_loss"]) for r in runs}
    assert len(steps) == 1 and len(next(iter(steps))) == 2  # every run evaluated at the same steps
    assert all(r["steps"] == EXPERIMENTS["smoke"].max_steps and r["tokens_per_s"] > 0 for r in runs)
    assert (tmp_path / "checkpoints/swaps-smoke/modern-seed2/last.ckpt").exists()
    assert (tmp_path / "logs/swaps-smoke/modern-seed2").is_dir()
    # Re-running trains nothing and writes the same table.
    again = run_cli(*args, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, describe(again)
    assert again.stderr.count("already finished") == 2 * len(VARIANTS)
    assert (tmp_path / "res/swaps.md").read_text() == table


def test_experiment_bad_options_are_one_line(tmp_path: Path):
    proc = run_main("experiment", "swaps", "--preset", "gpu", cwd=tmp_path)
    assert_one_line_error(proc, "--preset", "cpu")
    proc = run_main("experiment", "swaps", "--variants", "[modern]", cwd=tmp_path)
    assert_one_line_error(proc, "vanilla")
    proc = run_main("experiment", "swaps", "--variants", "[vanilla, gpt5]", cwd=tmp_path)
    assert_one_line_error(proc, "gpt5")
    proc = run_main("experiment", "swaps", "--variants", "[vanilla, vanilla]", cwd=tmp_path)
    assert_one_line_error(proc, "twice")


def test_a_run_of_another_configuration_is_refused_not_mixed_in(tmp_path: Path):
    stale = tmp_path / "checkpoints/swaps-smoke/vanilla-seed1"
    stale.mkdir(parents=True)
    (stale / "config.yaml").write_text('{"trainer": {"max_steps": 5}}')
    (stale / "results.json").write_text("{}")
    proc = run_cli("experiment", "swaps", "--preset", "smoke", "--seeds", "[1]", cwd=tmp_path)
    assert_one_line_error(proc, "another 'smoke' configuration")
