"""``python -m tinyllm bench``: the benchmarks print and write their figures."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import FitRun
from tests.helpers.cli import (
    TINY,
    run_cli,
)


def test_bench_commands_print_and_write_their_figures(fit_run: FitRun, tmp_path: Path):
    proc = run_cli("bench", "generate", "--ckpt_path", fit_run.dir / "checkpoints/tiny/last.ckpt",
                   "--lengths", "[5, 40]", "--setups", "[fp32, int8]", "--json", tmp_path / "gen.json",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "gen.json").read_text())["results"]
    # 40 > block_size 32: the window moves
    assert [(r["setup"], r["new_tokens"]) for r in rows] == [("fp32", 5), ("fp32", 40), ("int8", 5), ("int8", 40)]
    assert all(r["cached_tokens_per_s"] > 0 and r["recompute_tokens_per_s"] > 0 for r in rows)
    proc = run_cli("bench", "train", "--config", TINY, "--steps", "2", "--warmup", "0", "--rounds", "1",
                   "--json", tmp_path / "train.json", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads((tmp_path / "train.json").read_text())["results"]
    assert row["tokens_per_step"] == 8 * 32 and row["parameters"] > 0
    assert 0 < row["plain_mfu"] < 1 and 0 < row["lightning_mfu"] < 1 and row["matmul_peak_gflops"] > 0
    assert 0 <= row["plain_system_cpu_share"] < 1 and 0 <= row["lightning_system_cpu_share"] < 1
    assert "Lightning overhead" in proc.stdout
