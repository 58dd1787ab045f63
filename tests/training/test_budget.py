"""A run given only a time budget finishes by its deadline, with its LR decayed and its final evaluation done,
and a killed run resumes within the same budget (tinyllm.training.callbacks.TimeBudget, Lightning's Timer).

The runs use a fake clock (tests/helpers/probes.py: FakeClock): a step takes 0.1 s of it and a validation batch
0.01 s, whatever the machine, so what a budget buys is known in steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.cli import TINY, assert_one_line_error, describe, faults_env, read_scalars, run_cli

BUDGET_S = 6
RUN = ["fit", "--config", TINY, "--trainer.max_steps", "-1", "--trainer.max_time", f"00:00:00:{BUDGET_S:02d}",
       "--model.schedule", "wsd", "--samples", "null", "--early_stopping", "null",
       "--trainer.callbacks+=probes.FakeClock"]  # fmt: skip
# The steps 6 s buy at 0.1 s each, less the reserve for the final evaluation and checkpoint, and the 1 s margin.
STEPS = 47
CKPT = Path("checkpoints/tiny")


def _timer_elapsed(ckpt: dict) -> float:
    return ckpt["callbacks"]["Timer"]["time_elapsed"]["train"]


@pytest.mark.slow
def test_a_time_budget_ends_with_the_lr_decayed_and_a_final_evaluation(tmp_path: Path):
    proc = run_cli(*RUN, cwd=tmp_path, env=faults_env(10**9), timeout=120)
    assert proc.returncode == 0, describe(proc)
    last = torch.load(tmp_path / CKPT / "last.ckpt", weights_only=True)
    steps = last["global_step"]
    assert abs(steps - STEPS) <= 1, steps  # stopped where one more step would not leave room for the end
    assert _timer_elapsed(last) <= BUDGET_S  # the last checkpoint was written inside the budget
    scalars = read_scalars(tmp_path / "logs/tiny")
    assert scalars["val_loss"][-1][0] == steps - 1  # an evaluation of the final weights (logged at step - 1)
    lrs = [v for _, v in scalars["lr-AdamW/decay"]]
    # Decayed over the time (no max_steps to decay over): 47 steps of a 4.7 s deadline, the last logged at 0.42.
    assert max(lrs) > 1.9e-3 and lrs[-1] < 0.5 * max(lrs)


@pytest.mark.slow
def test_a_killed_time_budget_run_resumes_within_the_same_budget(tmp_path: Path):
    killed = run_cli(*RUN, "--trainer.callbacks+=faults.KillAt", cwd=tmp_path, env=faults_env(40), timeout=120)
    assert killed.returncode == -9, describe(killed)
    saved = torch.load(tmp_path / CKPT / "last.ckpt", weights_only=True)
    # The checkpoint before the kill (step 32) holds the time used: 32 steps of 0.1 s and two evaluations.
    assert saved["global_step"] == 32 and 3.2 <= _timer_elapsed(saved) < 3.5
    assert saved["callbacks"]["TimeBudget"] == {"budget_s": BUDGET_S}
    # Another budget would make the learning rate jump (it follows the share of the budget used): refused.
    longer = [a if a != f"00:00:00:{BUDGET_S:02d}" else "00:00:01:00" for a in RUN]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    refused = run_cli(*longer, "--ckpt_path", "last", cwd=tmp_path, env=faults_env(10**9), timeout=120)
    assert_one_line_error(refused, "time budget of 6 s", "60 s", "--trainer.max_time")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    resumed = run_cli(*RUN, "--ckpt_path", "last", cwd=tmp_path, env=faults_env(10**9), timeout=120)
    assert resumed.returncode == 0, describe(resumed)
    final = torch.load(tmp_path / CKPT / "last.ckpt", weights_only=True)
    # The resumed run spends only what the budget has left: it ends where an uninterrupted run ends.
    assert abs(final["global_step"] - STEPS) <= 1 and _timer_elapsed(saved) < _timer_elapsed(final) <= BUDGET_S


@pytest.mark.slow
def test_a_slow_first_step_and_evaluation_batch_do_not_end_a_budget_early(tmp_path: Path):
    """A compiled model compiles in its first step and its first evaluation batch: neither may stand for the step
    or evaluation time, or a budget would stop after one step (it did, at 70 s, with --model.compile true)."""
    run = [str(arg).replace("probes.FakeClock", "probes.FakeClockSlowStart") for arg in RUN]
    proc = run_cli(*run, cwd=tmp_path, env=faults_env(10**9), timeout=120)
    assert proc.returncode == 0, describe(proc)
    last = torch.load(tmp_path / CKPT / "last.ckpt", weights_only=True)
    # The first step's extra 2 s buy 20 fewer steps of 0.1 s; the evaluation's first batch is not in the budget.
    assert abs(last["global_step"] - (STEPS - 20)) <= 1, last["global_step"]
    assert _timer_elapsed(last) <= BUDGET_S
