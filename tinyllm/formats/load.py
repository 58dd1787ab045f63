"""The one way to load a model: from a training checkpoint, a run folder or an exported folder.

``read_parts`` reads what the file holds (architecture, weights, tokenizer,
training record) without building anything; ``load_model`` builds the GPT and
its tokenizer from those parts. Every command that takes ``--ckpt_path`` loads
through here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tinyllm.core.checkpoint import LoadedModel, ModelParts, checkpoint_parts, read_checkpoint
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import tokenizer_from_state
from tinyllm.errors import TinyLLMError
from tinyllm.formats.card import training_info
from tinyllm.formats.folder import export_dir_of, export_parts, write_export


def read_parts(path: str | Path) -> ModelParts:
    """The parts of a ``.ckpt`` file, a run folder (its last.ckpt, else best.ckpt) or an exported folder."""
    export_dir = export_dir_of(path)
    if export_dir is not None:
        return export_parts(export_dir)
    p, ckpt = read_checkpoint(path)
    parts = checkpoint_parts(p, ckpt)
    parts.training = training_info(p, ckpt)
    return parts


def load_model(path: str | Path, device: str | torch.device = "cpu", data_dir: str | Path | None = None) -> LoadedModel:
    """The GPT (in eval mode, on ``device``) and tokenizer saved at ``path``, with one-line errors."""
    parts = read_parts(path)
    tokenizer = tokenizer_from_state(parts.tokenizer_state, data_dir)
    if tokenizer.vocab_size > parts.config.vocab_size:
        raise TinyLLMError(f"{parts.path}: the tokenizer has {tokenizer.vocab_size} ids, the model only "
                           f"{parts.config.vocab_size}; re-export or re-train")  # fmt: skip
    model = GPT(parts.config)
    try:
        model.load_state_dict(parts.weights)
    except RuntimeError as e:
        why = str(e).splitlines()[0][:120]
        raise TinyLLMError(f"{parts.path}: weights do not match its architecture ({why})") from None
    return LoadedModel(model.to(device).eval(), tokenizer, parts.path, parts.step, parts.metrics, parts.training)


def export(
    ckpt_path: str | Path,
    out_dir: str | Path,
    data: str | None = None,
    verify: bool = True,
    data_dir: str | Path | None = None,
    repo_id: str | None = None,
) -> Path:
    """Export a training checkpoint (or re-export a folder) to ``out_dir``; returns the folder."""
    loaded = load_model(ckpt_path, "cpu", data_dir)
    return write_export(loaded.model, loaded.tokenizer, out_dir, loaded.training, data, verify, data_dir, repo_id)


