"""Faults a real run meets, each ending in one line, or handled, with nothing lost or mixed.

``test_fit_through_a_fault`` drives ``fit`` through one fault at a time, checks the run's folders right
after it (every checkpoint whole and of this run, no half-written file, one log folder), then clears
the fault and resumes to the end (the curves show every step once). SIGKILL and SIGTERM come at a
random step; the seed is in the test's messages, and TINYLLM_TEST_FAULT_SEED replays it.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import TINY, describe, env_for_cli, faults_env, run_cli
from tinyllm.commands.plot import read_scalars

CKPT = Path("checkpoints/tiny")


@pytest.mark.slow
def test_fast_dev_run_leaves_no_run_behind(tmp_path: Path):
    proc = run_cli("fit", "--config", TINY, "--trainer.fast_dev_run", "true", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("events.out.tfevents.*"))
    real = run_cli("fit", "--config", TINY, "--trainer.max_steps", "2", cwd=tmp_path)  # not "already belongs to a run"
    assert real.returncode == 0, describe(real)




# ----------------------------------------------------------------------------- one fault at a time

RUN = ["fit", "--config", str(TINY), "--samples", "null"]  # 24 steps, last.ckpt every 8
SEED = int(os.environ.get("TINYLLM_TEST_FAULT_SEED") or random.SystemRandom().randrange(1_000_000))
MOMENT = random.Random(SEED).randint(1, 23)  # the step a signal arrives at


def with_fault(run: Path, fault: str, step: int, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*RUN, *args, f"--trainer.callbacks+=faults.{fault}", cwd=run, env=faults_env(step))


def sigkill(run: Path) -> str:
    proc = with_fault(run, "KillAt", MOMENT)
    assert proc.returncode == -9, describe(proc)
    # The last periodic checkpoint: every 8 steps, but one that an evaluation follows waits for it (step 8, 16).
    if MOMENT > 8:
        assert saved_step(run) == (MOMENT - 1) // 8 * 8
    return "killed"


def sigterm(run: Path) -> str:
    proc = with_fault(run, "TerminateAt", MOMENT)
    line = one_line(proc, 128 + 15, "SIGTERM", "--ckpt_path last")
    assert saved_step(run) == MOMENT  # the step it was stopped at, saved on the way out
    return line


def second_process(run: Path) -> str:
    first = subprocess.Popen([sys.executable, "-m", "tinyllm", *RUN, "--trainer.callbacks+=faults.PauseAt"], cwd=run,
                             env=faults_env(4), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run / "paused").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.2)
        line = one_line(run_cli(*RUN, "--ckpt_path", "last", cwd=run), 2, "already training", f"process {first.pid}")
        one_line(run_cli(*RUN, cwd=run), 2, "already training")  # a fresh start of it too
    finally:
        first.kill()  # the holder dies; its OS lock dies with it
        first.wait()
    (run / "paused").unlink()
    return line


def full_disk(run: Path) -> str:
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(run)],
                                           capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("this machine does not let the test mount a small tmpfs")
    # The checkpoint at step 8 is written; the disk fills at step 12; the save at step 16 fails.
    line = one_line(with_fault(run, "FillDiskAt", 12), 2, "cannot write", "No space left on device", "--ckpt_path last")
    assert saved_step(run) == 8
    (run / "filler").unlink()
    return line


def refused_folder(run: Path) -> str:
    (run / "checkpoints").write_text("a file where the checkpoint folder should be")
    line = one_line(run_cli(*RUN, cwd=run), 2, "cannot write in", "checkpoints/tiny")
    (run / "checkpoints").unlink()
    assert not (run / "logs").exists()  # refused at start-up: nothing trained, nothing logged
    return line


def nan(run: Path) -> str:
    line = one_line(with_fault(run, "PoisonAt", 10), 2, "the loss became nan at step 10")
    assert saved_step(run) == 8 and not (run / CKPT / "on_exception.ckpt").exists()  # no NaN state saved
    return line


def _damaged_last(run: Path, damage: Callable[[bytes], bytes], *words: str) -> str:
    assert with_fault(run, "KillAt", 12).returncode == -9
    last = run / CKPT / "last.ckpt"
    last.write_bytes(damage(last.read_bytes()))
    before = last.read_bytes()
    line = one_line(run_cli(*RUN, "--ckpt_path", "last", cwd=run), 2, str(CKPT / "last.ckpt"), *words)
    assert last.read_bytes() == before  # left as it was, for the user to look at
    last.unlink()  # what the line says to do: move it away (the next resume goes on from best.ckpt)
    return line


def corrupt_last(run: Path) -> str:
    return _damaged_last(run, lambda b: b[:100] + bytes(len(b) - 100), "corrupt")


def truncated_last(run: Path) -> str:  # a copy cut short: a synced folder, a full quota
    return _damaged_last(run, lambda b: b[: len(b) // 2], "truncated")


def last_of_another_model(run: Path) -> str:  # a checkpoint copied into the wrong run folder
    other = run / "other"
    other.mkdir()
    assert run_cli(*RUN, "--model.arch.n_embd", "16", "--trainer.max_steps", "8", cwd=other).returncode == 0
    assert with_fault(run, "KillAt", 12).returncode == -9
    shutil.copy(other / CKPT / "last.ckpt", run / CKPT / "last.ckpt")
    shutil.rmtree(other)
    line = one_line(run_cli(*RUN, "--ckpt_path", "last", cwd=run), 2, "n_embd")
    (run / CKPT / "last.ckpt").unlink()
    return line


FAULTS = [sigkill, sigterm, second_process, full_disk, refused_folder, nan, corrupt_last, truncated_last,
          last_of_another_model]  # fmt: skip


def one_line(proc: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("tinyllm: error:", "tinyllm: stopped"))]
    assert proc.returncode == status and len(lines) == 1 and "Traceback" not in proc.stderr, describe(proc)
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def saved_step(run: Path) -> int:
    return torch.load(run / CKPT / "last.ckpt", weights_only=True)["global_step"]


def assert_nothing_lost_or_mixed(run: Path) -> None:
    """Every checkpoint loads and is this run's; nothing half-written; one log folder, readable."""
    for ckpt in (run / CKPT).glob("*.ckpt") if (run / CKPT).is_dir() else []:
        state = torch.load(ckpt, weights_only=True)
        assert state["hyper_parameters"]["arch"]["n_embd"] == 32 and 0 < state["global_step"] <= 24, ckpt
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    if (run / "logs").exists():
        assert sorted(p.name for p in (run / "logs").iterdir()) == ["tiny"]


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS, ids=[f.__name__ for f in FAULTS])
def test_fit_through_a_fault(tmp_path: Path, fault: Callable[[Path], str]):
    run = tmp_path / "run"
    run.mkdir()
    try:
        said = fault(run)
        print(f"{fault.__name__} (seed {SEED}, step {MOMENT}): {said}")
        assert_nothing_lost_or_mixed(run)
        resumed = run_cli(*RUN, "--ckpt_path", "last", cwd=run, env=env_for_cli())
        assert resumed.returncode == 0, f"seed {SEED}, step {MOMENT}: " + describe(resumed)
        if fault in (corrupt_last, truncated_last, last_of_another_model):  # last.ckpt moved away: not a new run
            assert "resuming from best.ckpt, the newest checkpoint there (step 8)" in resumed.stderr, describe(resumed)
    finally:
        if fault is full_disk:
            subprocess.run(["umount", str(run)], check=False, capture_output=True)
    if fault is full_disk:
        return  # the run lived on the tmpfs
    assert saved_step(run) == 24
    assert_nothing_lost_or_mixed(run)
    curves = read_scalars(run / "logs/tiny")
    for tag in ("train_loss", "val_loss"):
        steps = [s for s, _ in curves[tag]]
        assert steps == sorted(set(steps)), f"seed {SEED}: {tag} shows a step twice: {steps}"
    assert curves["val_loss"][-1][0] == 23
