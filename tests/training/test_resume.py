"""Lose nothing: a run killed with SIGKILL and resumed ends bit-for-bit where the uninterrupted run ends.

Every run goes through the CLI in a subprocess, as a user would run it. The
kill comes from tests/helpers/faults.py: a real SIGKILL, so no hook, finally
block or on-exception checkpoint gets to run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers.cli import TINY, faults_env, run_cli
from tinyllm.commands.plot import read_scalars

# Dropout, gradient accumulation and Muon (the CPU recipe's optimizer: Muon for the block matrices, AdamW for the
# rest, one optimizer to Lightning) on, so the RNG, the accumulation phase and both optimizers' state must resume.
# The checkpoint every 8 optimizer steps falls on an evaluation (every 8 batches = 4 steps): its save is deferred.
RUN = ["fit", "--config", str(TINY), "--model.arch.dropout", "0.1", "--trainer.accumulate_grad_batches", "2",
       "--model.optimizer", "muon", "--model.muon_lr", "0.02",
       "--trainer.max_steps", "24", "--trainer.log_every_n_steps", "1"]  # fmt: skip
CKPT = Path("checkpoints/tiny")


def fit(cwd: Path, *extra: str, kill_at: int | None = None, killer: str = "KillAt") -> subprocess.CompletedProcess:
    args = [*RUN, *extra]
    if kill_at is not None:
        args.append(f"--trainer.callbacks+=faults.{killer}")
    cwd.mkdir(parents=True, exist_ok=True)
    return run_cli(*args, cwd=cwd, env=faults_env(kill_at) if kill_at is not None else None)


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def differences(a: Any, b: Any, root_a: str, root_b: str, where: str = "") -> list[str]:
    """Every place two checkpoints differ; tensors compared exactly, the two run folders' paths made equal."""
    if isinstance(a, str) and isinstance(b, str):
        return [] if a.replace(root_a, "RUN") == b.replace(root_b, "RUN") else [f"{where}: {a!r} != {b!r}"]
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
        return [] if same and a.shape == b.shape and torch.equal(a, b) else [f"{where}: tensors differ"]
    if isinstance(a, dict) and isinstance(b, dict):
        ka = {k.replace(root_a, "RUN") if isinstance(k, str) else k: k for k in a}
        kb = {k.replace(root_b, "RUN") if isinstance(k, str) else k: k for k in b}
        if set(ka) != set(kb):
            return [f"{where}: keys {sorted(map(str, set(ka) ^ set(kb)))}"]
        return [d for k in ka for d in differences(a[ka[k]], b[kb[k]], root_a, root_b, f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, root_a, root_b, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted")
    proc = fit(run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load(run / CKPT / "last.ckpt")["global_step"] == 24
    return run


def assert_same_final_state(reference: Path, resumed: Path, only: tuple[str, ...] | None = None) -> None:
    a, b = load(reference / CKPT / "last.ckpt"), load(resumed / CKPT / "last.ckpt")
    assert b["global_step"] == 24
    # The comparison covers what must resume: weights, optimizer moments, schedule, data position, RNG.
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "ShakespeareDataModule", "loops", "callbacks"):
        assert key in a
    if only is not None:
        a, b = {k: a[k] for k in only}, {k: b[k] for k in only}
    assert differences(a, b, str(reference), str(resumed)) == []


@pytest.mark.slow
def test_sigkill_between_checkpoints_then_resume_is_bit_exact(uninterrupted: Path, tmp_path: Path) -> None:
    killed = fit(tmp_path, kill_at=12)  # after the checkpoint at step 8, before the one at 16
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert load(tmp_path / CKPT / "last.ckpt")["global_step"] == 8
    assert (tmp_path / "logs/tiny/config.yaml").exists()  # the first start's saved config must not block the resume

    resumed = fit(tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Restored all states from the checkpoint" in resumed.stderr
    assert set(load(tmp_path / CKPT / "last.ckpt")["optimizer_states"][0]) == {"muon", "adamw"}
    assert_same_final_state(uninterrupted, tmp_path)

    # The logs: one run directory, and each curve is the uninterrupted run's curve exactly, with
    # the steps logged between the checkpoint (8) and the kill (12) shown once, not twice.
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["tiny"]
    ours, theirs = read_scalars(tmp_path / "logs/tiny"), read_scalars(uninterrupted / "logs/tiny")
    for tag in ("train_loss", "val_loss", "val_ppl"):
        steps = [s for s, _ in ours[tag]]
        assert steps == sorted(set(steps)), f"{tag} has repeated steps: {steps}"
        assert ours[tag] == theirs[tag], tag


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_save_keeps_the_previous_checkpoint(uninterrupted: Path, tmp_path: Path) -> None:
    killed = fit(tmp_path, kill_at=16, killer="KillMidSave")  # dies writing the step-16 checkpoint
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = tmp_path / CKPT / "last.ckpt"
    assert load(last)["global_step"] == 8  # whole, loadable, and still the previous one
    resumed = fit(tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Restoring states from the checkpoint path at {last}" in resumed.stderr
    assert_same_final_state(uninterrupted, tmp_path)


@pytest.mark.slow
def test_ckpt_path_last_with_nothing_saved_starts_fresh_and_says_so(tmp_path: Path) -> None:
    proc = fit(tmp_path, "--ckpt_path", "last", "--trainer.max_steps", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no checkpoint to resume" in proc.stderr
    assert "no last checkpoint available" not in proc.stderr  # Lightning's version, whose hint is done already
    assert load(tmp_path / CKPT / "last.ckpt")["global_step"] == 4


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(uninterrupted: Path, tmp_path: Path) -> None:
    interrupted = fit(tmp_path, kill_at=12, killer="InterruptAt")
    # Lightning ends its Ctrl-C handling with exit status 1; tinyllm says what happened, and exits as a shell expects.
    assert interrupted.returncode == 130, interrupted.stderr[-2000:]
    stopped = [line for line in interrupted.stderr.splitlines() if line.startswith("tinyllm: ")]
    assert stopped[-1:] == ["tinyllm: interrupted (Ctrl-C); the steps done (if any) are saved in last.ckpt: resume with "
                           "--ckpt_path last"]
    on_exception = tmp_path / CKPT / "on_exception.ckpt"
    assert load(on_exception)["global_step"] == 12  # the state at Ctrl-C, later than the step-8 checkpoint
    # Lightning's save_on_exception also writes last.ckpt, so `last` needs no second candidate.
    assert load(tmp_path / CKPT / "last.ckpt")["global_step"] == 12
    resumed = fit(tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Restoring states from the checkpoint path at {tmp_path / CKPT / 'last.ckpt'}" in resumed.stderr
    # The training trajectory is exact. One thing is not: Ctrl-C came right before an evaluation, and
    # Lightning does not run an evaluation a checkpoint was saved before, so one evaluation is missing.
    training = ("state_dict", "optimizer_states", "lr_schedulers", "ShakespeareDataModule", "global_step")
    assert_same_final_state(uninterrupted, tmp_path, only=training)
    assert not on_exception.exists()  # a finished run removes its stale on-exception checkpoint


def assert_a_killed_run_resumes_bit_exact(tmp_path: Path, *extra: str) -> Path:
    """Run ``fit`` with ``extra`` uninterrupted, and again killed at step 12 and resumed: the same final state.
    Returns the resumed run's folder."""
    reference, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    assert fit(reference, *extra).returncode == 0
    assert fit(killed, *extra, kill_at=12).returncode == -9
    resumed = fit(killed, *extra, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_final_state(reference, killed)
    return killed


@pytest.mark.slow
def test_sigkill_on_a_prepared_folder_then_resume_is_bit_exact(tmp_path: Path) -> None:
    """The same guarantee on memory-mapped shards of a prepared corpus with its own BPE: batch k is f(seed, rank, k)."""
    from tests.helpers.corpora import documents, prepared, write_folder

    data = prepared(write_folder(tmp_path / "corpus", documents(120, seed=3)), tmp_path / "data", tokenizer="bpe:300")
    killed = assert_a_killed_run_resumes_bit_exact(tmp_path, "--data.path", str(data))
    assert load(killed / CKPT / "last.ckpt")["hyper_parameters"]["tokenizer"]["kind"] == "bpe"


@pytest.mark.slow
def test_sigkill_with_bpe_dropout_then_resume_is_bit_exact(tmp_path: Path) -> None:
    """BPE-dropout cuts each pass over the tokens anew: a resume must cut the passes it had not seen the same way."""
    from tests.helpers.bpe import shakespeare_head

    text = tmp_path / "head.txt"  # ~4 k tokens: the 48 batches of a run span three passes
    text.write_text(shakespeare_head(6_000), encoding="utf-8")
    assert_a_killed_run_resumes_bit_exact(
        tmp_path, "--data.path", str(text), "--data.tokenizer", "bpe:300", "--data.bpe_dropout", "0.2")


@pytest.mark.slow
def test_sigkill_of_a_compiled_run_then_resume_is_bit_exact(tmp_path: Path) -> None:
    """Compiled, the dropout masks come from torch's generator (kernels.fill_dropout_mask_), which the checkpoint
    restores. One layer: each layer draws its masks alike, and a layer fewer is seconds fewer of C++ compiles."""
    assert_a_killed_run_resumes_bit_exact(tmp_path, "--model.compile", "true", "--model.arch.n_layer", "1")
