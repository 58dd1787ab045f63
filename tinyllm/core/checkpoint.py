"""Lightning's checkpoint layout, read (and written) in this one module, without trusting the file.

Training checkpoints are Lightning ``.ckpt`` files, but reading one needs no
Lightning: ``torch.load(weights_only=True)`` gives tensors and plain containers
only, so a file carrying foreign pickled objects (which could run code) is
refused. The layout's keys (``state_dict``, ``hyper_parameters``,
``global_step``, ``callbacks``, the data module's state) are named only here;
everything else asks these functions. (Exported folders are read by
``tinyllm.formats``; ``formats.load.load_model`` builds a model from either.)
"""

from __future__ import annotations

import importlib.metadata
import math
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from torch import Tensor

from tinyllm.core.config import GPTConfig
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import Tokenizer
from tinyllm.errors import ConfigError, TinyLLMError
from tinyllm.files import user_path

MODEL_PREFIX = "model."  # GPTLitModule keeps the GPT in `self.model`
DATA_STATE = "ShakespeareDataModule"  # Lightning stores a data module's state under its class name
DATA_POSITION = "train_batches_done"  # ... and in it, where the training stream resumes
BUDGET_STATE = "TimeBudget"  # Lightning stores a callback's state under its class name (training.callbacks)
BUDGET_SECONDS = "budget_s"  # ... and in it, the run's time budget
BEST_VAL_LOSS = "best_val_loss"  # the training record's key for the best evaluation
# The recorded hyperparameters that shape training, besides the architecture: a resume must match them, and a
# model card reports them. (The rest, the tokenizer and compile, are checked elsewhere or change no result.)
TRAINING_HPARAMS = ("optimizer", "lr", "muon_lr", "min_lr", "warmup_steps", "weight_decay", "betas", "schedule",
                    "decay_fraction")


@dataclass
class ModelParts:
    """What a saved model is made of, before anything is built: from a checkpoint or an exported folder."""

    config: GPTConfig
    weights: dict[str, Tensor]
    tokenizer_state: dict[str, Any]
    path: Path
    step: int | None
    metrics: dict[str, float]
    training: dict[str, Any] = field(default_factory=dict)  # what the file records about its training


@dataclass
class LoadedModel:
    """A model ready for inference (eval mode), its tokenizer, and where it came from."""

    model: GPT
    tokenizer: Tokenizer
    path: Path
    step: int | None
    metrics: dict[str, float]
    training: dict[str, Any] = field(default_factory=dict)


LAST_CKPT = "last.ckpt"  # Lightning's ModelCheckpoint.CHECKPOINT_NAME_LAST: the newest state, what a resume reads
BEST_CKPT = "best.ckpt"  # the lowest val loss so far
CHECKPOINT_NAMES = (LAST_CKPT, BEST_CKPT)  # what a directory given as a checkpoint means, in order


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file; a directory means its ``last.ckpt`` (else ``best.ckpt``)."""
    p = user_path(path)
    if p.is_dir():
        for name in CHECKPOINT_NAMES:
            if (p / name).is_file():
                return p / name
        raise TinyLLMError(
            f"{p} holds no last.ckpt or best.ckpt, nor an exported model (config.json + model.safetensors): "
            "pass the path of a .ckpt file or of a `tinyllm export` folder"
        )
    if not p.is_file():
        raise TinyLLMError(f"checkpoint {p} does not exist: check --ckpt_path (e.g. checkpoints/quick/last.ckpt)")
    return p


def read_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint dict, loaded safely, with one-line errors for every way it can be wrong."""
    p = resolve_checkpoint(path)
    if not zipfile.is_zipfile(p) and p.suffix != ".ckpt":  # another kind of file: nothing to move away
        raise TinyLLMError(f"{p} is not a checkpoint (not the zip archive torch.save writes): pass a .ckpt file "
                           "that python -m tinyllm fit wrote")  # fmt: skip
    if not zipfile.is_zipfile(p):  # torch.save writes a zip archive: anything else is not a checkpoint
        raise TinyLLMError(f"{p} is not a readable checkpoint (not the zip archive torch.save writes: corrupt, "
                           "truncated or another kind of file): move it away and pass another checkpoint, or start "
                           "the run again")  # fmt: skip
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise TinyLLMError(
            f"refused to load {p}: it holds pickled objects other than tensors and plain data "
            f"({str(e).splitlines()[-1][:120]}); only use checkpoints from sources you trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:  # KeyError: a damaged archive's records
        cause = str(e).split(". ")[0][:90]  # torch's first sentence; the rest is advice for its own developers
        raise TinyLLMError(f"{p} is not a readable checkpoint (corrupt or truncated: {cause}): move it away and "
                           "pass another checkpoint, or start the run again") from None  # fmt: skip
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "arch" not in ckpt.get("hyper_parameters", {}):
        raise TinyLLMError(f"{p} is not a tinyllm checkpoint (no model state or architecture in it)")
    return p, ckpt


def checkpoint_parts(p: Path, ckpt: dict[str, Any]) -> ModelParts:
    """The architecture, weights and tokenizer of a checkpoint dict returned by :func:`read_checkpoint`."""
    hparams = checkpoint_hparams(ckpt)
    try:
        config = GPTConfig.from_dict(hparams["arch"])
    except (ConfigError, TypeError) as e:
        raise TinyLLMError(f"{p} has an invalid architecture: {e}") from None
    if hparams.get("tokenizer") is None:
        raise TinyLLMError(f"{p} has no tokenizer stored in it: it was not written by `tinyllm fit`")
    weights = {k[len(MODEL_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    best = best_checkpoint_state(ckpt)
    metrics = {BEST_VAL_LOSS: float(best["best_model_score"])} if best else {}
    return ModelParts(config, weights, hparams["tokenizer"], p, checkpoint_step(ckpt), metrics)


def checkpoint_hparams(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The LightningModule's hyperparameters: the architecture, tokenizer and training settings."""
    return ckpt.get("hyper_parameters") or {}


def checkpoint_step(ckpt: dict[str, Any]) -> int:
    """Optimizer steps taken when the checkpoint was saved."""
    return int(ckpt.get("global_step") or 0)


def budget_seconds_used(ckpt: dict[str, Any]) -> float | None:
    """Training seconds a time-budget run had used (Lightning's ``Timer`` state), None without a budget."""
    timer = (ckpt.get("callbacks") or {}).get("Timer")
    return float(timer["time_elapsed"]["train"]) if timer else None


def budget_seconds(ckpt: dict[str, Any]) -> float | None:
    """The time budget (``--trainer.max_time``, in seconds) the run was trained on; None without one, or if unsaved."""
    state = (ckpt.get("callbacks") or {}).get(BUDGET_STATE) or {}
    return float(state[BUDGET_SECONDS]) if state.get(BUDGET_SECONDS) is not None else None


def train_batches_done(ckpt: dict[str, Any]) -> int:
    """Training micro-batches consumed: where the data stream resumes."""
    return int((ckpt.get(DATA_STATE) or {}).get(DATA_POSITION, 0))


def as_lightning_checkpoint(model: GPT, tokenizer_state: dict[str, Any], step: int | None) -> dict[str, Any]:
    """A minimal Lightning checkpoint (weights and hyperparameters) of ``model``, as ``validate`` reads one."""
    state = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    hparams = {"arch": model.config.to_dict(), "tokenizer": tokenizer_state}
    return {"state_dict": state, "hyper_parameters": hparams, "global_step": step or 0, "epoch": 0,
            "pytorch-lightning_version": importlib.metadata.version("lightning")}  # fmt: skip


def best_checkpoint_state(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state of the run's "best" ModelCheckpoint (a finite ``best_model_score``), if there is one."""
    for key, state in (ckpt.get("callbacks") or {}).items():
        if "ModelCheckpoint" in key and isinstance(state, dict) and state.get("best_model_score") is not None:
            if math.isfinite(float(state["best_model_score"])):
                return state
    return None
