"""``python -m tinyllm plot``: a run's logs as a PNG."""

from __future__ import annotations

import pytest

from pathlib import Path

from tests.conftest import FitRun
from tests.helpers.cli import (
    assert_one_line_error,
    run_cli,
)


@pytest.mark.slow
def test_plot_turns_the_run_logs_into_a_png(fit_run: FitRun, tmp_path: Path):
    proc = run_cli("plot", "--logdir", fit_run.dir / "logs/tiny", "--out", tmp_path / "curves.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = run_cli("plot", "--logdir", tmp_path, cwd=tmp_path)  # a folder with no TensorBoard events
    assert_one_line_error(proc, "no TensorBoard event files")
