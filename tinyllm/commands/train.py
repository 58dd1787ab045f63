"""``python -m tinyllm fit`` and ``validate``: Lightning's own commands, through tinyllm's LightningCLI.

Their options are LightningCLI's (``fit --help``); ``validate`` also accepts an
exported folder as ``--ckpt_path``, handed to Lightning as a temporary .ckpt.
"""

from __future__ import annotations

import inspect
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from tinyllm.core.checkpoint import as_lightning_checkpoint
from tinyllm.formats.folder import export_dir_of
from tinyllm.formats.load import load_model
from tinyllm.training.cli import build_cli


def fit(args: list[str]) -> None:
    """Train a model: fit --config configs/quick.yaml [--name NAME] [--ckpt_path last] (options: fit --help).

    A run is a name: checkpoints/<name>/ and logs/<name>/.

    Length: --trainer.max_steps N, or a time budget --trainer.max_time DD:HH:MM:SS (or both: whichever
    ends first). A time-budget run finishes by its deadline: the learning rate decays over the time,
    and the last evaluation and checkpoint fit inside it. --ckpt_path last resumes a run. A step-defined
    run resumes bit for bit. A time-defined run resumes within the same budget (the time used is in the
    checkpoint), but not bit for bit: how many steps fit, and the learning rate at each, depend on the
    machine's speed in each process.
    """
    build_cli(["fit", *args], description=inspect.getdoc(fit))


def validate(args: list[str]) -> None:
    """Val loss of a checkpoint over the whole held-out split: validate --config C --ckpt_path last|best|FILE|FOLDER.

    last and best are the run's (--name) own checkpoints; FOLDER is an exported folder, handed to Lightning as a
    temporary .ckpt.
    """
    with lightning_checkpoint_args(args) as lightning_args:
        build_cli(["validate", *lightning_args], description=inspect.getdoc(validate))


@contextmanager
def lightning_checkpoint_args(args: list[str]) -> Iterator[list[str]]:
    """``args`` with an exported folder given as ``--ckpt_path`` replaced by an equivalent temporary .ckpt.

    Lightning's ``validate`` reads .ckpt files only. The temporary file holds the
    folder's weights and architecture/tokenizer hyperparameters, nothing else
    (tensors and plain types, loadable with weights_only=True); it is deleted
    afterwards. Any other ``--ckpt_path`` passes through untouched.
    """
    where = None
    for i, arg in enumerate(args):
        if arg == "--ckpt_path" and i + 1 < len(args):
            where, value, prefix = i + 1, args[i + 1], ""
        elif arg.startswith("--ckpt_path="):
            where, value, prefix = i, arg.split("=", 1)[1], "--ckpt_path="
    folder = export_dir_of(value) if where is not None else None
    if folder is None:
        yield args
        return
    loaded = load_model(folder)
    with tempfile.TemporaryDirectory(prefix="tinyllm-export-") as tmp:
        path = Path(tmp) / f"{loaded.path.name}.ckpt"
        torch.save(as_lightning_checkpoint(loaded.model, loaded.tokenizer.state(), loaded.step), path)
        print(f"tinyllm: validating exported folder {loaded.path} (as {path.name})", file=sys.stderr)
        yield [*args[:where], prefix + str(path), *args[where + 1 :]]

