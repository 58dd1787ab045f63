"""Load a model for inference from whatever the user points at: a training checkpoint or an exported folder."""

from __future__ import annotations

from pathlib import Path

import torch

from tinyllm.core.checkpoint import LoadedModel, model_from_checkpoint, read_checkpoint
from tinyllm.formats.folder import export_dir_of, load_export


def load_model(path: str | Path, device: str | torch.device = "cpu", data_dir: str | None = None) -> LoadedModel:
    """The GPT and tokenizer of a training checkpoint or an exported folder, in eval mode on ``device``."""
    export_dir = export_dir_of(path)
    if export_dir is not None:
        return load_export(export_dir, device, data_dir)
    p, ckpt = read_checkpoint(path)
    return model_from_checkpoint(p, ckpt, device, data_dir)
