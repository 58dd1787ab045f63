"""Callbacks that record what a run did, for tests: added with ``--trainer.callbacks+=probes.NAME``
(tests/helpers on PYTHONPATH, as faults_env sets it)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning as L


class RecordBatches(L.Callback):
    """Writes ``batches-rank{R}.json`` in the working directory: a fingerprint of each training batch this rank drew."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.seen.append(hashlib.sha256(batch[0].numpy().tobytes()).hexdigest())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        Path(f"batches-rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


class FakeClock(L.Callback):
    """Replaces the clocks of Lightning's Timer and tinyllm's callbacks by one that only moves when the run works:
    every optimizer step takes ``STEP_S`` and every validation batch ``EVAL_S``, on any machine, however loaded.

    A time-budget test then asks what a budget buys in steps of known length, not how fast the machine is.
    """

    STEP_S, EVAL_S = 0.1, 0.01

    def __init__(self) -> None:
        import types

        import lightning.pytorch.callbacks.timer as timer_module

        import tinyllm.training.callbacks as tinyllm_callbacks

        self.now = 0.0
        clock = types.SimpleNamespace(monotonic=lambda: self.now, perf_counter=lambda: self.now)
        timer_module.time = clock  # type: ignore[assignment]
        tinyllm_callbacks.time = clock  # type: ignore[assignment]

    def on_before_optimizer_step(self, *args: Any) -> None:
        self.now += self.STEP_S

    def on_validation_batch_end(self, *args: Any) -> None:
        self.now += self.EVAL_S


class FakeClockSlowStart(FakeClock):
    """FakeClock whose first optimizer step and first validation batch each take ``START_S`` more, as a
    compiled model's do (it compiles its training graph in one and its evaluation graph in the other)."""

    START_S = 2.0

    def __init__(self) -> None:
        super().__init__()
        self.started: set[str] = set()

    def _first(self, what: str) -> None:
        if what not in self.started:
            self.started.add(what)
            self.now += self.START_S

    def on_before_optimizer_step(self, *args: Any) -> None:
        super().on_before_optimizer_step(*args)
        self._first("step")

    def on_validation_batch_start(self, *args: Any) -> None:  # inside the batch, whatever the callbacks' order
        self._first("evaluation")
