"""Faults a real run meets, each ending in one line with nothing lost or mixed: a second process on one run,
a disk that fills, and Lightning's own debugging flag."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import TINY, describe, env_for_cli, faults_env, run_cli

CKPT = Path("checkpoints/tiny")


def one_line_exit_2(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tinyllm: error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, describe(proc)
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


@pytest.mark.slow
def test_a_second_process_on_a_training_run_is_refused_and_a_killed_holder_blocks_nothing(tmp_path: Path):
    env = faults_env(4)
    first = subprocess.Popen([sys.executable, "-m", "tinyllm", "fit", "--config", str(TINY),
                              "--trainer.callbacks+=faults.PauseAt"], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "paused").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.2)
        for args in (["--ckpt_path", "last"], []):  # a resume, and a new start, of the run that is training
            second = run_cli("fit", "--config", TINY, *args, cwd=tmp_path)
            one_line_exit_2(second, "already training", f"process {first.pid}")
        assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["tiny"]
    finally:
        first.kill()
        first.wait()
    # The lock died with its process: the run resumes (here: starts, as no checkpoint was due yet) and trains.
    again = run_cli("fit", "--config", TINY, "--ckpt_path", "last", "--trainer.max_steps", "2", cwd=tmp_path)
    assert again.returncode == 0, describe(again)
    assert torch.load(tmp_path / CKPT / "last.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.slow
def test_fast_dev_run_leaves_no_run_behind(tmp_path: Path):
    proc = run_cli("fit", "--config", TINY, "--trainer.fast_dev_run", "true", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("events.out.tfevents.*"))
    real = run_cli("fit", "--config", TINY, "--trainer.max_steps", "2", cwd=tmp_path)  # not "already belongs to a run"
    assert real.returncode == 0, describe(real)


@pytest.mark.slow
def test_a_disk_that_fills_during_training_ends_in_one_line_and_keeps_the_last_checkpoint(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("this machine does not let the test mount a small tmpfs")
    try:
        # The checkpoint at step 8 is written; the disk fills at step 12; the save at step 16 fails.
        proc = run_cli("fit", "--config", TINY, "--samples", "null", "--trainer.callbacks+=faults.FillDiskAt",
                       cwd=mnt, env=faults_env(12))  # fmt: skip
        one_line_exit_2(proc, "cannot write", "No space left on device", "--ckpt_path last")
        kept = torch.load(mnt / CKPT / "last.ckpt", weights_only=True)
        assert kept["global_step"] == 8  # the last good state, whole
        assert not [p for p in (mnt / CKPT).iterdir() if p.name.endswith(".tmp")]  # no half-written file left
        (mnt / "filler").unlink()
        resumed = run_cli("fit", "--config", TINY, "--samples", "null", "--ckpt_path", "last", cwd=mnt,
                          env=env_for_cli())  # fmt: skip
        assert resumed.returncode == 0, describe(resumed)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
