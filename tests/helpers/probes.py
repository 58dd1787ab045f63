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
