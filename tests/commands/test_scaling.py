"""Tests for ``python -m tinyllm experiment scaling``: the fits recover known laws, and a small grid runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.cli import assert_one_line_error, describe, run_main
from tinyllm.commands.runs import CPU_RECIPE, shipped
from tinyllm.commands.scaling import fit_loss, fit_tokens, frontier, head_width, predict, shape_args
from tinyllm.core.config import GPTConfig
from tinyllm.core.model import GPT
from tinyllm.errors import TinyLLMError

LAW = {"E": 1.2, "A": 40.0, "alpha": 0.45, "B": 300.0, "beta": 0.5}
MACHINE = {"c": 4e9, "p": 0.9, "q": 1.0}  # a 10x larger model trains about 8x fewer tokens in the same time


def grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.repeat([1e5, 3e5, 1e6, 3e6, 1e7], 3)
    t = np.tile([0.5, 1.0, 2.0], 5)
    return n, t, MACHINE["c"] * n ** -MACHINE["p"] * t ** MACHINE["q"]


def test_the_fits_recover_a_known_law_and_machine():
    n, t, d = grid()
    loss = predict(LAW, MACHINE, n, t)
    fitted = fit_loss(n, d, loss)
    assert fitted["rmse"] < 2e-3
    assert fitted["alpha"] == pytest.approx(LAW["alpha"], abs=0.02) and fitted["beta"] == pytest.approx(LAW["beta"], abs=0.02)
    machine = fit_tokens(n, t, d)
    assert machine["p"] == pytest.approx(0.9) and machine["q"] == pytest.approx(1.0)


def test_the_frontier_is_the_minimum_and_grows_with_the_budget():
    sizes = np.geomspace(1e4, 1e8, 2000)
    small, _ = frontier(LAW, MACHINE, 1.0, (1e4, 1e8))
    large, loss = frontier(LAW, MACHINE, 30.0, (1e4, 1e8))
    assert loss == pytest.approx(predict(LAW, MACHINE, sizes, 30.0).min(), abs=1e-3)
    assert 1e4 < small < large < 1e8  # more minutes buy a larger best model, inside the searched range


def test_shapes_keep_the_head_width_and_bad_ones_are_one_line(tmp_path: Path):
    assert shape_args("4x128", 32) == ["--model.arch.n_layer", "4", "--model.arch.n_embd", "128",
                                       "--model.arch.n_head", "4"]  # fmt: skip
    for bad in ("4x100", "x128", "0x64"):
        proc = run_main("experiment", "scaling", "--sizes", f"[2x64, 3x96, '{bad}']", cwd=tmp_path)
        assert_one_line_error(proc, bad)
    assert_one_line_error(run_main("experiment", "scaling", "--minutes", "[1]", cwd=tmp_path), "--minutes")


def test_the_head_width_is_the_configs_own(tmp_path: Path):
    assert head_width(shipped(CPU_RECIPE)) == 32  # 128 channels in 4 heads
    (tmp_path / "wide.yaml").write_text("model:\n  arch:\n    n_embd: 256\n    n_head: 4\n")
    (tmp_path / "bare.yaml").write_text("trainer:\n  max_steps: 10\n")
    defaults = GPTConfig()
    assert head_width(str(tmp_path / "wide.yaml")) == 64
    assert head_width(str(tmp_path / "bare.yaml")) == defaults.n_embd // defaults.n_head
    proc = run_main("experiment", "scaling", "--config", "wide.yaml", "--sizes", "[2x64, 3x96, 4x192]", cwd=tmp_path)
    assert_one_line_error(proc, "3x96", "head width, 64")  # fine for cpu.yaml's heads of 32, not for heads of 64
    (tmp_path / "broken.yaml").write_text("model: [")
    assert_one_line_error(run_main("experiment", "scaling", "--config", "broken.yaml", cwd=tmp_path), "broken.yaml")
    shapes = [(0, 4), (-128, -4), ("true", "true"), ("128.0", 4), (130, 4)]
    for bad in ["model: 3", "model:\n  arch: n_embd",
                *(f"model:\n  arch:\n    n_embd: {e}\n    n_head: {h}" for e, h in shapes)]:
        (tmp_path / "bad.yaml").write_text(bad)
        with pytest.raises(TinyLLMError, match="^--config .*bad.yaml: model.arch"):
            head_width(str(tmp_path / "bad.yaml"))


def test_a_grid_is_run_fitted_and_reported_and_a_rerun_trains_nothing(tmp_path: Path, monkeypatch):
    """The command around its runs; each run is ``experiment budgets``' rung, tested for real in test_budgets.py."""
    trained = []

    def fake_rung(config: str, minutes: float, extra: list[str], name: str) -> dict:
        trained.append(name)
        arch = {"n_layer": int(extra[1]), "n_embd": int(extra[3]), "n_head": int(extra[5]), "vocab_size": 65}
        n = GPT(GPTConfig(**arch)).num_parameters()
        d = MACHINE["c"] * n ** -MACHINE["p"] * minutes ** MACHINE["q"]
        return {"budget_min": minutes, "name": name, "val_loss": float(predict(LAW, MACHINE, np.array(n), minutes)),
                "steps": 1000, "tokens": d, "arch": arch, "options": extra,
                "validation": "the held-out text"}  # fmt: skip

    monkeypatch.setattr("tinyllm.commands.scaling.run_rung", fake_rung)
    args = ("experiment", "scaling", "--sizes", "[1x32, 2x64, 4x128]", "--minutes", "[0.5, 1]", "--ask", "[30]",
            "--out", "res")
    proc = run_main(*args, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert trained == [f"scaling-cpu/{s}-{m}min-seed1337" for s in ("1x32", "2x64", "4x128") for m in ("0.5", "1")]
    summary = json.loads((tmp_path / "res/scaling.json").read_text())
    assert summary["fit"]["loss"]["alpha"] == pytest.approx(LAW["alpha"], abs=0.02)
    assert [b["minutes"] for b in summary["frontier"]] == [0.5, 1, 30] and summary["frontier"][-1]["extrapolated"]
    assert (tmp_path / "res/scaling.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 4x128 |" in (tmp_path / "res/scaling.md").read_text()
    assert "over the held-out text) and the optimizer steps" in (tmp_path / "res/scaling.md").read_text()
    assert run_main(*args, cwd=tmp_path).returncode == 0 and len(trained) == 6  # every point was kept
    no_ask = run_main(*args[:-4], "--ask", "[]", "--out", "res", cwd=tmp_path)  # the measured budgets only
    assert no_ask.returncode == 0 and len(trained) == 6, describe(no_ask)
    assert [b["minutes"] for b in json.loads((tmp_path / "res/scaling.json").read_text())["frontier"]] == [0.5, 1]
    # A kept point of another configuration (another cpu.yaml, or other options) is refused, not mixed in.
    kept = tmp_path / "checkpoints/scaling-cpu/2x64-1min-seed1337/scaling.json"
    kept.write_text(json.dumps({**json.loads(kept.read_text()), "config": "elsewhere/cpu.yaml"}))
    assert_one_line_error(run_main(*args, cwd=tmp_path), "another configuration", "2x64-1min")
