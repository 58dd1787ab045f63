"""Lightning callbacks of our own; each is configured in the YAML, none is hard-coded."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint, ThroughputMonitor, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tinyllm.errors import TinyLLMError
from tinyllm.files import atomic_write_bytes


def _windows_in_batch(batch: Any) -> int:
    return batch[0].size(0)


def _tokens_in_batch(batch: Any) -> int:
    return batch[0].numel()


class TokenThroughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor for (x, y) token batches: ``items_per_sec`` is tokens/s.

    MFU is logged when the device's peak FLOP/s is known: Lightning knows
    common GPUs; for a CPU pass ``peak_flops`` (``python -m tinyllm bench
    train`` measures it).
    """

    def __init__(self, peak_flops: float | None = None, window_size: int = 50) -> None:
        super().__init__(batch_size_fn=_windows_in_batch, length_fn=_tokens_in_batch, window_size=window_size)
        self.peak_flops = peak_flops

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.available_flops is None and self.peak_flops:
            self.available_flops = int(self.peak_flops)
            for throughput in self._throughputs.values():
                throughput.available_flops = self.available_flops


class StepProgressBar(TQDMProgressBar):
    """A progress bar over optimizer steps (``step 1200/5000``), with loss and time left.

    Training draws endless random windows, so there are no epochs to count;
    the bar runs to ``max_steps`` and, on resume, starts where the run left off.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        bar.initial = trainer.global_step  # so the rate (and time left) counts only this session's steps
        _update_n(bar, trainer.global_step)
        bar.set_description("step")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            _update_n(bar, trainer.global_step)
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class ResumeCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` optimizer steps: the checkpoint to resume from.

    Periodic checkpoints, not evaluation-time ones, are what survive a hard kill
    (a Colab disconnect is a SIGKILL). One refinement over a plain
    ``ModelCheckpoint``: when an evaluation runs right after such a step, the
    save waits until the evaluation has finished. Lightning does not re-run an
    evaluation on resume, so a checkpoint taken just before it would lose that
    evaluation's effect on early stopping and on the best checkpoint.
    List this callback after the "best" ModelCheckpoint, so that the state it
    saves already includes that evaluation's best score.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 100) -> None:
        if every_n_train_steps < 1:
            raise TinyLLMError(f"ResumeCheckpoint.every_n_train_steps must be at least 1, got {every_n_train_steps}")
        super().__init__(
            dirpath=dirpath,
            every_n_train_steps=every_n_train_steps,
            save_last=True,
            save_top_k=0,
            enable_version_counter=False,  # never last-v1.ckpt: there is one last.ckpt per run
            save_on_train_epoch_end=False,
        )
        self._save_after_eval_at: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        # Lightning's own test for "does an evaluation follow this batch?" (private, hence the hasattr guard).
        epoch_loop = trainer.fit_loop.epoch_loop
        if hasattr(epoch_loop, "_should_check_val_fx") and epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher):
            if trainer.global_step % self._every_n_train_steps == 0:
                self._save_after_eval_at = trainer.global_step
            return
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._save_after_eval_at == trainer.global_step and not trainer.sanity_checking:
            self._save_after_eval_at = None
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_validation_end(trainer, pl_module)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, fsyncs it, then renames it into place.

    Lightning's own atomic save stages the file in the system temp folder; when
    checkpoints live on another filesystem (a mounted Google Drive) the final
    move is a copy, and a kill during that copy leaves a truncated last.ckpt.
    A rename within one folder is atomic: the previous checkpoint stays whole
    until the new one is complete.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own path
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())


class ExceptionCheckpoint(OnExceptionCheckpoint):
    """Saves ``on_exception.ckpt`` on Ctrl-C or a crash, but not for tinyllm's own errors.

    ``--ckpt_path last`` picks the newest of ``last.ckpt`` and this file. After a
    non-finite loss the state is not worth resuming from, and a configuration
    error (a ``TinyLLMError``) has nothing worth saving, so the last periodic
    checkpoint stays the one that is picked. Nor is anything saved before the
    first optimizer step.
    """

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, TinyLLMError) or trainer.global_step == 0:
            return
        super().on_exception(trainer, pl_module, exception)


class TensorBoardResume(L.Callback):
    """On resume, hide what the crashed run logged after its checkpoint, so each curve stays one line.

    TensorBoard's ``purge_step``: events at or after that step in earlier files
    of the run directory are dropped when the logs are read. It must be set
    before the SummaryWriter is created, which happens lazily on first use.
    """

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Lightning logs optimizer step k (1-based) at step k - 1, so a checkpoint taken after
        # `global_step` steps holds everything logged below that step; the resumed run logs from there.
        purge_step = int(checkpoint.get("global_step", 0))
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                if logger._experiment is not None:  # already opened: reopen with the purge
                    logger._experiment.close()
                    logger._experiment = None
                logger._kwargs["purge_step"] = purge_step


class RNGState(L.Callback):
    """Stores every random-number generator in checkpoints, and restores them on resume.

    Lightning saves model, optimizer, scheduler and loop state, but not RNG
    state, so a resumed run would draw different dropout masks than the run it
    continues. The states are restored at ``on_train_start``, after the sanity
    check and dataloader set-up, right before the next training batch.
    States are stored as tensors and plain lists, so checkpoints still load
    with ``weights_only=True``.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": _to_lists(random.getstate()),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(_to_tuples(state["python"]))


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


class GenerationSamples(L.Callback):
    """Every ``every_n_evals`` evaluations, generate from ``prompt`` with the KV cache and log the text.

    The text goes to the console and to TensorBoard's Text tab. Sampling uses
    its own seeded generator and restores the model's train/eval mode, so a
    run with this callback ends with exactly the weights of a run without it.
    """

    def __init__(
        self,
        prompt: str = "ROMEO:",
        max_new_tokens: int = 200,
        every_n_evals: int = 1,
        temperature: float = 0.8,
        top_k: int | None = 200,
        seed: int = 1337,
    ) -> None:
        from tinyllm.generate import check_sampling

        check_sampling(temperature, top_k, None)
        if max_new_tokens < 1 or every_n_evals < 1 or not prompt:
            raise TinyLLMError("GenerationSamples needs a prompt, max_new_tokens >= 1 and every_n_evals >= 1")
        self.prompt, self.max_new_tokens, self.every_n_evals = prompt, max_new_tokens, every_n_evals
        self.temperature, self.top_k, self.seed = temperature, top_k, seed
        self.evals = 0

    def state_dict(self) -> dict[str, Any]:
        return {"evals": self.evals}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.evals = int(state_dict.get("evals", 0))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Tokenize the prompt once, now: a character the vocabulary lacks fails at start-up, not at step 500.
        from tinyllm.tokenizers import tokenizer_from_state

        self._tokenizer = tokenizer_from_state(pl_module.hparams["tokenizer"], getattr(trainer.datamodule, "data_dir", None))
        self._prompt_ids = self._tokenizer.encode(self.prompt)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self.evals += 1
        if self.evals % self.every_n_evals or not trainer.is_global_zero:
            return
        text = self.sample(pl_module.model)
        print(f"\n--- sample at step {trainer.global_step} ---\n{text}\n", flush=True)
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            # Indented four spaces: TensorBoard renders Markdown, and this keeps line breaks.
            experiment.add_text("sample", "    " + text.replace("\n", "\n    "), trainer.global_step)

    def sample(self, model: torch.nn.Module) -> str:
        from tinyllm.generate import generate

        was_training = model.training
        model.eval()
        try:
            g = generate(
                model, self._prompt_ids, self.max_new_tokens, decode=self._tokenizer.decode,
                temperature=self.temperature, top_k=self.top_k, seed=self.seed, kv_cache=True,
            )
        finally:
            model.train(was_training)
        return self.prompt + g.texts[0]
