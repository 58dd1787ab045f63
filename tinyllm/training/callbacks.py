"""tinyllm's Lightning callbacks.

The ones that exact resume, atomic saves and TensorBoard continuity need
(``ResumeCheckpoint``, ``AtomicCheckpointIO``, ``RNGState``) are always on:
``tinyllm.training.cli`` wires them in code, so a config cannot drop them.
The rest (``TokenThroughput``, ``StepProgressBar``, ``GenerationSamples``) are
optional, each one switch of the config with its defaults in the same place.
"""

from __future__ import annotations

import io
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops
from lightning.pytorch.callbacks import ModelCheckpoint, Timer, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from tqdm import tqdm

from tinyllm.compat import evaluation_follows_batch, save_last_checkpoint
from tinyllm.core.checkpoint import BUDGET_SECONDS
from tinyllm.core.defaults import LOOK_PROMPT, PROMPT, SAMPLE_TOKENS, SEED, TEMPERATURE, TOP_K
from tinyllm.core.figures import attention_grid, labels_of
from tinyllm.core.generate import check_sampling, generate
from tinyllm.core.insides import attention_maps, evaluating
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import Tokenizer, tokenizer_from_state
from tinyllm.errors import TinyLLMError
from tinyllm.files import atomic_write_bytes
from tinyllm.training.metrics import THROUGHPUT_PREFIX


def compute_dtype(precision: str | int) -> torch.dtype:
    """The dtype a Lightning precision multiplies in: the peak MFU is measured against."""
    text = str(precision)
    return torch.bfloat16 if text.startswith("bf16") else torch.float16 if text.startswith("16") else torch.float32


class TokenThroughput(L.Callback):
    """Training tokens/s, and MFU when the device's peak FLOP/s is known, logged as ``train/device/*``.

    Built on Lightning's ``Throughput`` meter. Only the time from the start to
    the end of each training batch counts (not evaluation, not checkpoints).
    Lightning knows common GPUs' peaks; for a CPU pass ``peak_flops``
    (``python -m tinyllm bench train`` measures it). The model's FLOPs per batch
    come from ``pl_module.flops_per_batch``.
    """

    def __init__(self, peak_flops: float | None = None, window_size: int = 50) -> None:
        if window_size < 2:  # a rate needs two points in time
            raise TinyLLMError(f"throughput.window_size must be at least 2 batches, got {window_size}")
        self.peak_flops, self.window_size = peak_flops, window_size

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        peak = self.peak_flops or get_available_flops(trainer.strategy.root_device, compute_dtype(trainer.precision))
        self.meter = Throughput(available_flops=peak, world_size=trainer.world_size, window_size=self.window_size)
        self.elapsed, self.batches, self.windows, self.tokens = 0.0, 0, 0, 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, *_: Any) -> None:
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           *_: Any) -> None:  # fmt: skip
        self.elapsed += time.perf_counter() - self.t0
        self.batches += 1
        self.windows += batch[0].size(0)
        self.tokens += batch[0].numel()
        # time, batches, samples and lengths are running totals; flops is this batch's alone (the meter sums them).
        self.meter.update(time=self.elapsed, batches=self.batches, samples=self.windows, lengths=self.tokens,
                          flops=getattr(pl_module, "flops_per_batch", 0))  # fmt: skip
        # Lightning writes step metrics every log_every_n_steps; logging each batch costs a small dict.
        figures = {THROUGHPUT_PREFIX + k: v for k, v in self.meter.compute().items()}
        pl_module.log_dict(figures, on_step=True, on_epoch=False)


class StepProgressBar(TQDMProgressBar):
    """A progress bar over optimizer steps (``step 1200/5000``), with loss and time left.

    Training draws endless random windows, so there are no epochs to count:
    the bar runs to ``max_steps``. A time-budget run has no step total, so its
    bar runs over the budget instead: ``step 2419 · 10:10 / 30:00``, the time
    used (across resumes, as the budget counts it) out of the whole budget.

    A resumed run starts where it left off, and its rate and time left count
    only this process's steps. Lightning calls no ``on_train_epoch_start`` when
    it resumes mid-epoch, so the bar is also set up in ``on_train_start``.
    """

    BUDGET_FORMAT = "{desc} |{bar}| {percentage:3.0f}%{postfix}"  # step 2419 · 10:10 / 30:00 |###   | 34%, loss=…

    def on_train_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_start(trainer)
        self._start(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        self._start(trainer)

    def _start(self, trainer: L.Trainer) -> None:
        bar = self.train_progress_bar
        self.timer = budget_timer(trainer) if trainer.max_steps <= 0 else None
        if self.timer is not None:
            # elapsed + remaining is the duration, up to float rounding (1799.99… would print as 29:59)
            self.budget_s = round(self.timer.time_elapsed() + (self.timer.time_remaining() or 0.0))
            bar.reset(total=max(1, self.budget_s))
            bar.bar_format = self.BUDGET_FORMAT
            self._show_budget(trainer)
            return
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        bar.initial = bar.n = trainer.global_step  # so the rate (and time left) counts only this process's steps
        bar.set_description("step")

    def _show_budget(self, trainer: L.Trainer) -> None:
        used = min(self.timer.time_elapsed(), self.budget_s)
        self.train_progress_bar.n = round(used)
        text = f"step {trainer.global_step} · {tqdm.format_interval(used)} / {tqdm.format_interval(self.budget_s)}"
        self.train_progress_bar.set_description_str(text, refresh=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is None or bar.disable or not (step % self.refresh_rate == 0 or step == bar.total):
            return
        if self.timer is not None:
            self._show_budget(trainer)
        elif bar.n != step:
            bar.n = step
        else:
            return
        bar.set_postfix(self.get_metrics(trainer, pl_module))  # also redraws the bar

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def budget_timer(trainer: L.Trainer) -> Timer | None:
    """Lightning's ``Timer`` of a ``--trainer.max_time`` run (it keeps the budget across resumes), or None."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)


class ResumeCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` optimizer steps, and on Ctrl-C or a crash: what
    ``--ckpt_path last`` resumes.

    Periodic checkpoints, not evaluation-time ones, are what survive a hard kill
    (a Colab disconnect is a SIGKILL). Two refinements over a plain
    ``ModelCheckpoint``:

    * When an evaluation runs right after such a step, the save waits until the
      evaluation has finished. Lightning does not re-run an evaluation on
      resume, so a checkpoint taken just before it would lose that
      evaluation's effect on early stopping and on the best checkpoint. (The
      CLI lists this callback after the "best" one, so that the state it saves
      already includes that evaluation's best score.)
    * On an exception it saves ``on_exception.ckpt`` and ``last.ckpt``
      (Lightning's ``save_on_exception``), except for tinyllm's own errors (a
      non-finite loss is no state to resume from; a configuration error has
      nothing to save) and before the first optimizer step. A finished run
      deletes the stale ``on_exception.ckpt``.
    * A run that ends between two saves (its time budget ran out, or early
      stopping) saves its last state at the end.
    """

    EXCEPTION_NAME = "on_exception"

    def __init__(self, dirpath: str, every_n_train_steps: int) -> None:
        if every_n_train_steps < 1:
            raise TinyLLMError(f"the checkpoint interval must be at least 1 step, got {every_n_train_steps}")
        super().__init__(
            dirpath=dirpath,
            filename=self.EXCEPTION_NAME,  # the only file it writes besides last.ckpt: top-k is off
            every_n_train_steps=every_n_train_steps,
            save_last=True,
            save_top_k=0,
            enable_version_counter=False,  # never last-v1.ckpt: there is one last.ckpt per run
            save_on_train_epoch_end=False,
            save_on_exception=True,
        )
        self.every = every_n_train_steps
        self._save_after_eval_at: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        if evaluation_follows_batch(trainer):
            if trainer.global_step % self.every == 0:
                self._save_after_eval_at = trainer.global_step
            return
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._save_after_eval_at == trainer.global_step and not trainer.sanity_checking and not trainer.fast_dev_run:
            self._save_after_eval_at = None
            save_last_checkpoint(self, trainer)
        super().on_validation_end(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, TinyLLMError) or trainer.global_step == 0:
            return
        try:
            super().on_exception(trainer, pl_module, exception)
        except TinyLLMError:
            # The disk that stopped the run refused this save too: say what stopped it.
            if isinstance(exception, OSError):
                raise TinyLLMError(f"{describe_os_error(exception)}; the last checkpoint is kept") from None
            raise

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:  # Lightning's smoke test writes no checkpoints (its own save_last would): no run left
            return
        super().on_train_end(trainer, pl_module)
        if trainer.global_step % self.every:  # ended off the cadence (a time budget, early stopping): save the end
            save_last_checkpoint(self, trainer)
        stale = Path(self.dirpath) / f"{self.EXCEPTION_NAME}{self.FILE_EXTENSION}"
        if trainer.is_global_zero and stale.exists():
            stale.unlink()


def describe_os_error(e: OSError) -> str:
    """``cannot write logs/x/events… (No space left on device): …`` — an OSError as one line that says what to do."""
    where = e.filename or "the run's logs and checkpoints"
    return (f"cannot write {where} ({e.strerror or e}): free space or make the folder writable, then resume with "
            "--ckpt_path last")


class TimeBudget(L.Callback):
    """Makes a run given ``--trainer.max_time`` *finish* by its deadline, instead of being cut off.

    Lightning's ``Timer`` keeps the clock, and stores the time used in every
    checkpoint, so a resumed run continues the same budget. Each training batch
    this callback

    * measures how much of the budget is used: it is the schedule's
      :class:`~tinyllm.training.schedule.BudgetClock` (``share_used``), so the
      learning rate decays over the time, not over ``max_steps``;
    * stops training early enough that one more step, the final evaluation and
      the final checkpoint still fit: their durations are measured as the run
      goes (the evaluation first from the sanity check), leaving out a
      process's first step and an evaluation's first batch, which carry
      one-time costs such as compiling. Stopping through
      ``should_stop`` makes Lightning run that last evaluation.

    Without ``max_time`` it does nothing. A time-defined run cannot resume
    bit-exactly: how many steps fit, and the learning rate at each, depend on
    the machine's speed in each process.
    """

    def __init__(self, margin_s: float = 1.0) -> None:
        self.margin_s = margin_s
        self.timer: Timer | None = None
        self._share = 0.0

    def share_used(self) -> float:
        """The share of the budget used, 0 → 1, as of the last training batch (0 without a budget)."""
        return self._share

    def state_dict(self) -> dict[str, Any]:
        # The budget itself, so that a resume with another one is refused: its learning rate would jump.
        budget = self.timer.time_elapsed() + (self.timer.time_remaining() or 0.0) if self.timer else None
        return {BUDGET_SECONDS: round(budget, 3) if budget is not None else None}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.timer = budget_timer(trainer)
        self.eval_batch_s = self.step_s = 0.0
        self.batches_timed = 0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.t_eval, self.eval_batch_ends = time.perf_counter(), []

    def on_validation_batch_end(self, *_: Any) -> None:
        self.eval_batch_ends.append(time.perf_counter())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Per batch, so that the few batches of the sanity check already predict a whole evaluation; from the
        # second batch on, since the first carries one-time costs (a compiled model compiles its evaluation there).
        ends = self.eval_batch_ends
        if len(ends) > 1:
            self.eval_batch_s = (ends[-1] - ends[0]) / (len(ends) - 1)
        elif ends:
            self.eval_batch_s = ends[0] - self.t_eval

    def on_train_batch_start(self, trainer: L.Trainer, *_: Any) -> None:
        self.t_step = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        if self.timer is None:
            return
        # A process's first step (compiling, warming up) does not predict the next: it is not taken as the step time.
        if self.batches_timed:
            self.step_s = time.perf_counter() - self.t_step
        self.batches_timed += 1
        elapsed, remaining = self.timer.time_elapsed(), self.timer.time_remaining() or 0.0
        eval_s = self.eval_batch_s * sum(trainer.num_val_batches)
        save_s = getattr(trainer.strategy.checkpoint_io, "save_seconds", 0.0)
        deadline = elapsed + remaining - (1.2 * eval_s + 2 * save_s + self.margin_s)
        self._share = min(1.0, elapsed / max(deadline, 1e-9))
        if elapsed + self.step_s >= deadline:
            trainer.should_stop = True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, fsyncs it, then renames it into place.

    Lightning's own atomic save stages the file in the system temp folder; when
    checkpoints live on another filesystem (a mounted Google Drive) the final
    move is a copy, and a kill during that copy leaves a truncated last.ckpt.
    A rename within one folder is atomic: the previous checkpoint stays whole
    until the new one is complete.
    """

    save_seconds = 0.0  # how long the last save took: a time budget keeps this much in reserve

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        t0 = time.perf_counter()
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own path
            super().save_checkpoint(checkpoint, path, storage_options)
        else:
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            try:
                atomic_write_bytes(Path(path), buffer.getvalue())
            except OSError as e:  # a full disk, a folder gone read-only: the previous checkpoint is still whole
                failed = OSError(e.errno, e.strerror, str(path))  # name the checkpoint, not its temporary file
                raise TinyLLMError(f"{describe_os_error(failed)}; the previous checkpoint is kept") from None
        self.save_seconds = time.perf_counter() - t0


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


class SameResumeEverywhere(L.Callback):
    """Every process of a run resumes from the same step, or the run stops before training, in one line.

    Each node resolves ``--ckpt_path last`` in its own working folder. A node without rank 0's last.ckpt
    would start afresh while rank 0 resumes, and the two would wait on each other's collectives forever.
    """

    def __init__(self, resume_step: int | None) -> None:
        self.resume_step = resume_step  # None: this process starts a new run

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size < 2 or stage != "fit":
            return
        # On the strategy's device: NCCL, DDP's backend on GPUs, gathers CUDA tensors only.
        mine = torch.tensor(-1 if self.resume_step is None else self.resume_step, device=trainer.strategy.root_device)
        steps = [int(s) for s in trainer.strategy.all_gather(mine).flatten()]
        if len(set(steps)) > 1:
            seen = ", ".join(f"rank {r} {f'step {s}' if s >= 0 else 'none'}" for r, s in enumerate(steps))
            raise TinyLLMError(f"the processes of this run found different checkpoints to resume ({seen}): "
                               "every node needs the run's checkpoints/NAME/last.ckpt (a shared folder, or a copy "
                               "of rank 0's on each node)")  # fmt: skip


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def tokenizer_of_run(trainer: L.Trainer, pl_module: L.LightningModule) -> Tokenizer:
    """The tokenizer the run trains with (from the module's hyperparameters)."""
    return tokenizer_from_state(pl_module.hparams["tokenizer"], getattr(trainer.datamodule, "data_dir", None))


class GenerationSamples(L.Callback):
    """Every ``every_n_evals`` evaluations, generate from ``prompt`` with the KV cache and log the text.

    The text goes to the console and to TensorBoard's Text tab. Sampling uses
    its own seeded generator and restores the model's train/eval mode, so a
    run with this callback ends with exactly the weights of a run without it.
    """

    def __init__(
        self,
        prompt: str = PROMPT,
        max_new_tokens: int = SAMPLE_TOKENS,
        every_n_evals: int = 1,
        temperature: float = TEMPERATURE,
        top_k: int | None = TOP_K,
        seed: int = SEED,
    ) -> None:
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
        self._tokenizer = tokenizer_of_run(trainer, pl_module)
        try:
            self._prompt_ids = self._tokenizer.encode(self.prompt)
        except TinyLLMError as e:  # the default PROMPT meets a corpus without those characters
            why = str(e).split(";")[0]
            raise TinyLLMError(f"the samples' prompt {self.prompt!r} does not fit this corpus ({why}): give one "
                               "from its text with --samples.prompt TEXT, or switch samples off with --samples null"
                               ) from None  # fmt: skip

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

    def sample(self, model: GPT) -> str:
        with evaluating(model):
            g = generate(
                model, self._prompt_ids, self.max_new_tokens, decode=self._tokenizer.decode,
                temperature=self.temperature, top_k=self.top_k, seed=self.seed, kv_cache=True,
            )
        return self.prompt + g.texts[0]


class AttentionImages(L.Callback):
    """At each evaluation, the attention grid (layers × heads) over a fixed prompt, in TensorBoard's Images tab.

    Off by default; ``--attention_images AttentionImages`` (or ``attention_images: AttentionImages`` in a
    config) switches it on. Watching it step by step shows the heads form. It looks under ``no_grad`` in eval
    mode, draws no random numbers and restores the model's mode, so a run with it ends with exactly the weights
    of a run without it.
    """

    def __init__(self, prompt: str = LOOK_PROMPT) -> None:
        if not prompt:
            raise TinyLLMError("AttentionImages needs a prompt")
        self.prompt = prompt

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        tokenizer = tokenizer_of_run(trainer, pl_module)
        self._ids = tokenizer.encode(self.prompt)[: pl_module.model.config.block_size]
        self._labels = labels_of(tokenizer, self._ids)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        if trainer.sanity_checking or trainer.state.fn != "fit" or not trainer.is_global_zero:
            return
        if not hasattr(experiment, "add_figure"):  # a logger without images (or none)
            return
        maps = attention_maps(pl_module.model, self._ids)
        fig = attention_grid(maps, self._labels, title=f"attention at step {trainer.global_step}")
        experiment.add_figure("attention", fig, trainer.global_step, close=False)
