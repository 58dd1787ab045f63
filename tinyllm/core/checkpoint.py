"""Read a training checkpoint for inference, without trusting the file.

Training checkpoints are Lightning ``.ckpt`` files, but reading one needs no
Lightning: ``torch.load(weights_only=True)`` gives tensors and plain containers
only, so a file carrying foreign pickled objects (which could run code) is
refused. (Exported folders are read by ``tinyllm.formats``; ``formats.load``
takes either.)
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tinyllm.core.config import GPTConfig
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import Tokenizer, tokenizer_from_state
from tinyllm.errors import ConfigError, TinyLLMError

MODEL_PREFIX = "model."  # GPTLitModule keeps the GPT in `self.model`


@dataclass
class LoadedModel:
    model: GPT
    tokenizer: Tokenizer
    path: Path
    step: int | None
    metrics: dict[str, float]


CHECKPOINT_NAMES = ("last.ckpt", "best.ckpt")  # what a directory given as a checkpoint means, in order


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file; a directory means its ``last.ckpt`` (else ``best.ckpt``)."""
    p = Path(path).expanduser()
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
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise TinyLLMError(
            f"refused to load {p}: it holds pickled objects other than tensors and plain data "
            f"({str(e).splitlines()[-1][:120]}); only use checkpoints from sources you trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise TinyLLMError(f"{p} is not a readable checkpoint (corrupt or truncated: {str(e)[:100]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "arch" not in ckpt.get("hyper_parameters", {}):
        raise TinyLLMError(f"{p} is not a tinyllm checkpoint (no model state or architecture in it)")
    return p, ckpt


def model_from_checkpoint(
    p: Path, ckpt: dict[str, Any], device: str | torch.device = "cpu", data_dir: str | None = None
) -> LoadedModel:
    """The GPT and tokenizer of a checkpoint dict returned by :func:`read_checkpoint`."""
    hparams = ckpt["hyper_parameters"]
    try:
        config = GPTConfig.from_dict(hparams["arch"])
    except (ConfigError, TypeError) as e:
        raise TinyLLMError(f"{p} has an invalid architecture: {e}") from None
    if hparams.get("tokenizer") is None:
        raise TinyLLMError(f"{p} has no tokenizer stored in it: it was not written by `tinyllm fit`")
    tokenizer = tokenizer_from_state(hparams["tokenizer"], data_dir)
    state = {k[len(MODEL_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    model = GPT(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise TinyLLMError(f"{p}: weights do not match its architecture ({str(e).splitlines()[0][:120]})") from None
    best = best_checkpoint_state(ckpt)
    metrics = {"best_val_loss": float(best["best_model_score"])} if best else {}
    return LoadedModel(model.to(device).eval(), tokenizer, p, ckpt.get("global_step"), metrics)


def best_checkpoint_state(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state of the run's "best" ModelCheckpoint (a finite ``best_model_score``), if there is one."""
    for key, state in (ckpt.get("callbacks") or {}).items():
        if "ModelCheckpoint" in key and isinstance(state, dict) and state.get("best_model_score") is not None:
            if math.isfinite(float(state["best_model_score"])):
                return state
    return None
