"""Faults on demand, for tests/test_resume.py: callbacks added with ``--trainer.callbacks+=faults.NAME``.

The step comes from $TINYLLM_TEST_KILL_AT_STEP. ``KillAt`` is a Colab disconnect:
SIGKILL cannot be caught, so no hook, finally block or on-exception checkpoint runs.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
import torch


class KillAt(L.Callback):
    def __init__(self) -> None:
        self.step = int(os.environ["TINYLLM_TEST_KILL_AT_STEP"])

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillMidSave(L.Callback):
    """SIGKILLs the process in the middle of writing last.ckpt at step $TINYLLM_TEST_KILL_AT_STEP or later:
    the new checkpoint is fully written to its temporary file, but not yet renamed into place."""

    def __init__(self) -> None:
        import tinyllm.files

        step, real_replace = int(os.environ["TINYLLM_TEST_KILL_AT_STEP"]), os.replace
        self.trainer: L.Trainer | None = None

        def replace_then_die(src: str, dst: Any) -> None:
            if str(dst).endswith("last.ckpt") and self.trainer is not None and self.trainer.global_step >= step:
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)

        tinyllm.files.os = _OsWithReplace(replace_then_die)

    def setup(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self.trainer = trainer


class _OsWithReplace:
    """The ``os`` module, but for ``replace``."""

    def __init__(self, replace: Any) -> None:
        self.replace = replace

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


class TerminateAt(KillAt):
    """SIGTERM at the step, as a scheduler (SLURM, Kubernetes, a Colab runtime being recycled) sends before a kill."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class InterruptAt(KillAt):
    """Ctrl-C at the step: a KeyboardInterrupt raised inside training, as SIGINT would."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


class PoisonAt(KillAt):
    """Turns one weight into NaN at the step, so the next loss is not finite."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step >= self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


class PauseAt(KillAt):
    """Stops working at the step, as a run busy elsewhere would: writes ``paused`` in the working directory, then
    sleeps, still holding whatever the run holds (its lock)."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            from pathlib import Path
            import time

            Path("paused").write_text(str(os.getpid()))
            time.sleep(300)


class FillDiskAt(KillAt):
    """Fills the file system of the working directory at the step (a ``filler`` file written until ENOSPC),
    as a disk that fills during training would."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            import errno

            with open("filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * (1 << 16))
                        f.flush()
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
