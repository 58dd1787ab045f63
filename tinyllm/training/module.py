"""The one LightningModule: next-token prediction with the hand-written GPT.

:meth:`GPTLitModule.loss` is the objective, and :func:`optimizer_step` one
training step outside Lightning (forward and loss under the run's precision,
backward, clipping, optimizer and schedule), so a speed figure measured by
``bench train`` or the precision probe is of the step ``fit`` runs.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Iterable

import lightning as L
from lightning.pytorch.callbacks import Timer
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from tinyllm.compat import training_compile_options
from tinyllm.core.config import GPTConfig
from tinyllm.core.model import GPT
from tinyllm.core.optim import BETAS, MUON_LR, OptimizerName, build_optimizer
from tinyllm.core.tokenizers import stored_spec
from tinyllm.errors import TinyLLMError
from tinyllm.training.metrics import TRAIN_LOSS, VAL_BPB, VAL_LOSS, VAL_PPL
from tinyllm.training.schedule import BudgetClock, Schedule, Shape

IGNORE_INDEX = -100  # targets of this value (padding) are left out of the loss's mean


class GPTLitModule(L.LightningModule):
    """Trains a :class:`tinyllm.core.model.GPT` on next-token cross-entropy.

    Args:
        arch: the model's architecture (every switch; ``vocab_size`` comes from the data).
        tokenizer: the tokenizer's state (filled in from the data), stored in
            every checkpoint so that a checkpoint alone can generate text.
        lr: peak learning rate of AdamW.
        optimizer: ``adamw`` for every parameter, or ``muon``: Muon for the hidden weight
            matrices and AdamW (at ``lr``) for embeddings, head and gains.
        muon_lr: peak learning rate of Muon's matrices (the schedule scales it with ``lr``).
        min_lr: the learning rate the decay ends at (default lr / 10; Muon's by the same ratio).
        warmup_steps: optimizer steps of linear warmup.
        weight_decay: AdamW decay, on weight matrices and embeddings only
            (not on norm gains or biases, whose scale the decay would distort).
        betas: AdamW's β1, β2.
        schedule: ``cosine`` decay after warmup, or ``wsd`` (constant, then a linear
            decay over the last ``decay_fraction`` of the run). The run's length is
            ``max_steps``, ``max_time`` (a time budget), or whichever ends first.
        decay_fraction: the share of the run that ``wsd`` spends decaying.
        compile: ``torch.compile`` the inner GPT (not this module: ``self.log``
            does not survive compilation).
    """

    def __init__(
        self,
        arch: GPTConfig = GPTConfig(),
        tokenizer: dict[str, str] | None = None,
        lr: float = 3e-4,
        min_lr: float | None = None,
        warmup_steps: int = 100,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = BETAS,
        schedule: Shape = Schedule.shape,
        decay_fraction: float = Schedule.decay_fraction,
        compile: bool = False,
        optimizer: OptimizerName = "adamw",
        muon_lr: float = MUON_LR,
    ) -> None:
        super().__init__()
        if isinstance(arch, dict):  # loaded back from a checkpoint's plain-dict hyperparameters
            arch = GPTConfig.from_dict(arch)
        if lr <= 0 or (min_lr is not None and not 0 <= min_lr <= lr):
            raise TinyLLMError(f"need lr > 0 and 0 <= min_lr <= lr, got lr={lr}, min_lr={min_lr}")
        if not 0.0 < decay_fraction <= 1.0:
            raise TinyLLMError(f"model.decay_fraction must be in (0, 1], got {decay_fraction}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas) or muon_lr <= 0 or weight_decay < 0:
            raise TinyLLMError(f"need two model.betas in [0, 1), model.muon_lr > 0 and model.weight_decay >= 0, got "
                               f"betas={list(betas)}, muon_lr={muon_lr}, weight_decay={weight_decay}")  # fmt: skip
        # Plain types only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["arch"])
        self.hparams["arch"] = arch.to_dict()
        self.arch = arch
        self.model = GPT(arch)
        self.lr, self.min_lr = lr, lr / 10 if min_lr is None else min_lr
        self.warmup_steps, self.weight_decay, self.betas = warmup_steps, weight_decay, tuple(betas)
        self.schedule, self.decay_fraction = schedule, decay_fraction
        self.optimizer_name, self.muon_lr = optimizer, muon_lr
        self.val_loss = MeanMetric()
        self.val_rows = 0  # windows in a full validation batch: a compiled model's shorter last one is padded to it
        self.flops_per_token = self.model.flops_per_token()
        self.flops_per_batch = 0  # read by TokenThroughput (callbacks.py) for MFU
        if compile:
            # In place: parameter names (and checkpoints) stay the same.
            self.model.compile(options=training_compile_options())

    def fresh_copy(self) -> GPTLitModule:
        """A new module with these hyperparameters and weights. (A deepcopy would keep calling this module's
        in-place ``torch.compile``d forward, and so train this module's parameters.)"""
        accepted = inspect.signature(type(self)).parameters  # LightningCLI adds keys of its own to hparams
        twin = type(self)(**{k: v for k, v in self.hparams.items() if k in accepted})
        twin.load_state_dict(self.state_dict())
        return twin

    def setup(self, stage: str) -> None:
        # Sum the val loss in float64 where the device has it (Apple's MPS does not): float32 sums of a
        # hundred batches round differently in another order, and several processes add in another order
        # than one; in float64 their val loss is the single-process value to 1e-6.
        if self.trainer is not None and self.trainer.strategy.root_device.type != "mps":
            self.val_loss.set_dtype(torch.float64)

    def forward(self, idx: Tensor) -> Tensor:
        return self.model(idx)

    def loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Mean next-token cross-entropy of ``batch`` = (x, y), y being x shifted by one: what training minimises."""
        x, y = batch
        logits = self(x)  # (B, T, vocab)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE_INDEX)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        if not torch.isfinite(loss):
            # A TinyLLMError: ResumeCheckpoint saves nothing for it, so last.ckpt stays the last good state.
            # Compiled, the cause may be torch's own, as Inductor's AVX-512 bf16 backward was (compat.py).
            first = "run without --model.compile, " if self.hparams.get("compile") else ""
            fp32 = "" if str(self.trainer.precision).startswith("32") else " or use --trainer.precision 32-true"
            raise TinyLLMError(f"the loss became {loss.item()} at step {self.global_step}: {first}lower the learning "
                               f"rate{fp32}; the last good checkpoint is kept")  # fmt: skip
        self.flops_per_batch = self.flops_per_token * batch[0].numel()
        self.log(TRAIN_LOSS, loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        weight = batch[1].numel()
        if self.hparams.get("compile"):
            batch = self.padded_to_full_size(batch)
        self.val_loss.update(self.loss(batch), weight=weight)

    def padded_to_full_size(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """The split's last, shorter batch padded with windows whose targets are ignored, so a compiled model
        evaluates every batch with the graph the first one compiled. A new batch size would compile another
        graph, seconds at the end of a time budget; the ignored rows change neither the mean nor its weight."""
        x, y = batch
        self.val_rows = max(self.val_rows, x.size(0))  # the first batch is a full one
        pad = self.val_rows - x.size(0)
        if pad == 0:
            return batch
        return torch.cat([x, x.new_zeros(pad, x.size(1))]), torch.cat([y, y.new_full((pad, y.size(1)), IGNORE_INDEX)])

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute().float()  # token-weighted mean, synced across processes
        self.val_loss.reset()
        self.log(VAL_LOSS, loss, prog_bar=True, sync_dist=False)
        self.log(VAL_PPL, torch.exp(loss))  # perplexity = e^(mean cross-entropy)
        # Bits per byte: nats per token → bits per token (/ ln 2) → bits per byte (/ bytes per token).
        # Runs with different tokenizers compare on this scale, not on val_loss.
        bytes_per_token = getattr(self.trainer.datamodule, "val_bytes_per_token", None)
        if bytes_per_token:
            self.log(VAL_BPB, loss / math.log(2) / bytes_per_token)

    def configure_optimizers(self) -> dict[str, Any]:
        timed = any(isinstance(cb, Timer) for cb in self.trainer.callbacks)
        if (self.trainer.max_steps or -1) < 1 and not timed:
            raise TinyLLMError("set --trainer.max_steps or --trainer.max_time: the learning-rate schedule runs over "
                               "one of them")
        clock = next((cb for cb in self.trainer.callbacks if isinstance(cb, BudgetClock)), None)
        return self.optimizers_for(self.trainer.max_steps or -1, clock)

    def optimizers_for(self, max_steps: int, clock: BudgetClock | None = None) -> dict[str, Any]:
        """The run's optimizer over the inner GPT, and its LR schedule over ``max_steps`` and ``clock``'s budget."""
        optimizer = build_optimizer(self.model, self.optimizer_name, self.lr, self.weight_decay, self.betas,
                                    self.muon_lr)  # fmt: skip
        schedule = Schedule(self.warmup_steps, self.min_lr / self.lr, self.schedule, self.decay_fraction, max_steps)
        # A plain lambda (not a callable object): LambdaLR leaves functions out of its state, so checkpoints stay plain.
        multiplier = lambda step: schedule(step, clock.share_used() if clock is not None else 0.0)  # noqa: E731
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose tokenizer or architecture differs from this run's."""
        saved = checkpoint.get("hyper_parameters", {})
        for key, ours in (("tokenizer", self.hparams.get("tokenizer")), ("arch", self.hparams["arch"])):
            theirs = saved.get(key)
            if theirs is not None and ours is not None and theirs != ours:
                diff = _describe_tokenizers(theirs, ours) if key == "tokenizer" else _describe_difference(theirs, ours)
                raise TinyLLMError(
                    f"the checkpoint's {key} differs from this run's ({diff}): use the config the checkpoint "
                    "was trained with, or start a new run with another --name"
                )


def _describe_difference(theirs: Any, ours: Any) -> str:
    if isinstance(theirs, dict) and isinstance(ours, dict):
        keys = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        shown = [f"{k}: checkpoint {_short(theirs.get(k))} vs run {_short(ours.get(k))}" for k in keys[:3]]
        return "; ".join(shown)
    return f"checkpoint {_short(theirs)} vs run {_short(ours)}"


def _describe_tokenizers(theirs: dict[str, Any], ours: dict[str, Any]) -> str:
    a, b = stored_spec(theirs), stored_spec(ours)
    return f"checkpoint {a}, run {b}" if a != b else f"both {a}, learned from different text"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def optimizer_step(
    module: GPTLitModule, batches: Iterable[tuple[Tensor, Tensor]], optimizers: dict[str, Any], precision: str,
    clip: float | None,
) -> Tensor:
    """One optimizer step as ``Trainer.fit`` takes it, without Lightning; the mean loss over ``batches``.

    Each micro-batch's :meth:`GPTLitModule.loss` under the precision's autocast
    (bf16-mixed: forward in bf16, weights and optimizer in fp32), its backward
    scaled for accumulation, gradient-norm clipping, the optimizer, the schedule.
    """
    batches = list(batches)
    total = torch.zeros(())
    for batch in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = module.loss(batch) / len(batches)
        loss.backward()
        total += loss.detach().float()
    if clip:
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    optimizers["optimizer"].step()
    optimizers["lr_scheduler"]["scheduler"].step()
    optimizers["optimizer"].zero_grad(set_to_none=True)
    return total
