"""A run given only a time budget finishes by its deadline, with its LR decayed and its final evaluation done,
and a killed run resumes within the same budget (tinyllm.training.callbacks.TimeBudget, Lightning's Timer)."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers.cli import TINY, describe, faults_env, read_scalars, run_cli

BUDGET_S = 6
RUN = ["fit", "--config", TINY, "--trainer.max_steps", "-1", "--trainer.max_time", f"00:00:00:{BUDGET_S:02d}",
       "--model.schedule", "wsd", "--samples", "null", "--early_stopping", "null"]  # fmt: skip
CKPT = Path("checkpoints/tiny")


def _timer_elapsed(ckpt: dict) -> float:
    return ckpt["callbacks"]["Timer"]["time_elapsed"]["train"]


def test_a_time_budget_ends_with_the_lr_decayed_and_a_final_evaluation(tmp_path: Path):
    proc = run_cli(*RUN, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, describe(proc)
    last = torch.load(tmp_path / CKPT / "last.ckpt", weights_only=True)
    steps = last["global_step"]
    assert steps > 16, "the budget should buy more than a couple of evaluations' worth of steps"
    assert _timer_elapsed(last) <= BUDGET_S  # the last checkpoint was written inside the budget
    scalars = read_scalars(tmp_path / "logs/tiny")
    assert scalars["val_loss"][-1][0] == steps - 1  # an evaluation of the final weights (logged at step - 1)
    lrs = [v for _, v in scalars["lr-AdamW/decay"]]
    assert max(lrs) > 1.9e-3 and lrs[-1] < 0.35 * max(lrs)  # decayed over the time, not over max_steps


def test_a_killed_time_budget_run_resumes_within_the_same_budget(tmp_path: Path):
    killed = run_cli(*RUN, "--trainer.callbacks+=faults.KillAt", cwd=tmp_path, env=faults_env(40), timeout=120)
    assert killed.returncode == -9, describe(killed)
    saved = torch.load(tmp_path / CKPT / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 32 and 0 < _timer_elapsed(saved) < BUDGET_S  # the checkpoint before the kill holds the time used
    resumed = run_cli(*RUN, "--ckpt_path", "last", cwd=tmp_path, timeout=120)
    assert resumed.returncode == 0, describe(resumed)
    final = torch.load(tmp_path / CKPT / "last.ckpt", weights_only=True)
    assert final["global_step"] > 40 and _timer_elapsed(saved) < _timer_elapsed(final) <= BUDGET_S
