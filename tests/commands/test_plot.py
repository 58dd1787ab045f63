"""``python -m tinyllm plot``: a run's logs as a PNG."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FitRun
from tests.helpers.cli import (
    assert_one_line_error,
    run_cli,
    run_main,
)


@pytest.mark.slow
def test_plot_turns_the_run_logs_into_a_png(fit_run: FitRun, tmp_path: Path):
    proc = run_cli("plot", "--logdir", fit_run.dir / "logs/tiny", "--out", tmp_path / "curves.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = run_cli("plot", "--logdir", tmp_path, cwd=tmp_path)  # a folder with no TensorBoard events
    assert_one_line_error(proc, "no TensorBoard event files")


def _logs(folder: Path, purge_step: int | None = None) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder), purge_step=purge_step)
    for step in range(5):
        writer.add_scalar("train_loss", 4.0 - step / 10, step)
    writer.close()
    return folder


def test_plot_writes_a_png_where_it_says_and_refuses_other_formats(tmp_path: Path):
    logs = _logs(tmp_path / "logs")
    proc = run_main("plot", "--logdir", logs, "--out", tmp_path, cwd=tmp_path)  # a folder: curves.png in it
    assert proc.returncode == 0 and f"wrote {tmp_path / 'curves.png'}" in proc.stdout, proc.stderr
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_one_line_error(run_main("plot", "--logdir", logs, "--out", tmp_path / "c.xyz", cwd=tmp_path), ".png")
    assert not (tmp_path / "c.xyz").exists()
    proc = run_main("plot", "--logdir", logs, "--out", f"{tmp_path / 'figures'}/", cwd=tmp_path)  # a folder to make
    assert proc.returncode == 0 and (tmp_path / "figures" / "curves.png").is_file(), proc.stderr


def test_plot_of_logs_whose_steps_were_all_purged_is_one_line(tmp_path: Path):
    logs = _logs(tmp_path / "logs")
    from torch.utils.tensorboard import SummaryWriter

    SummaryWriter(str(logs), purge_step=0).close()  # a restart from step 0 that logged nothing: every point hidden
    assert_one_line_error(run_main("plot", "--logdir", logs, cwd=tmp_path), "no train_loss or val_loss")


def test_a_tilde_in_the_paths_means_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``--out=~/…`` (after an =, or in a YAML, no shell expands it) writes under $HOME, not into a folder named ~."""
    from tinyllm.commands.plot import plot

    home, work = tmp_path / "home", tmp_path / "work"
    _logs(home / "logs")
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    plot("~/logs", "~/pics/c.png")
    assert (home / "pics" / "c.png").is_file() and list(work.iterdir()) == []
