"""Share a model: a folder of safetensors and JSON that tinyllm and Hugging Face both load.

``python -m tinyllm export`` writes

    model.safetensors      the weights, float32 (safetensors: no pickle, nothing to execute)
    config.json            a Hugging Face config, with tinyllm's own config under the "tinyllm" key
    tokenizer.json         the tokenizer, for Hugging Face's ``tokenizers`` / ``AutoTokenizer``
    tokenizer_config.json
    README.md              the model card, generated from the checkpoint (never written by hand)

Which names and config it uses is ``tinyllm.formats.hf_layout``'s business.

tinyllm loads the folder back (``tinyllm.formats.load.load_model``, and every
``--ckpt_path``, accept the folder) with bit-identical logits, reading only
safetensors and JSON.

Plain PyTorch: this module does not import Lightning. ``transformers`` (the
parity check at export time) is an optional dependency, the ``hf`` extra.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from tinyllm.core.checkpoint import BEST_VAL_LOSS, CHECKPOINT_NAMES, ModelParts
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import Tokenizer
from tinyllm.errors import TinyLLMError, one_line
from tinyllm.files import check_writable_folder, sha256_of, umask, user_path
from tinyllm.formats.card import ExportFacts, Measured, model_card
from tinyllm.formats.hf_layout import (
    CARD, CONFIG, FILES, FORMAT_VERSION, TOKENIZER, TOKENIZER_CONFIG, WEIGHTS, ExportSection, export_state, hf_config,
    layout_of, read_export_config, state_from_export,
)  # fmt: skip
from tinyllm.formats.hf_parity import check_with_transformers
from tinyllm.formats.hf_tokenizer import hf_tokenizer, tokenizer_config


def is_export_dir(path: str | Path) -> bool:
    """A folder written by ``tinyllm export`` (or at least shaped like one: config.json + model.safetensors)."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG).is_file() and (p / WEIGHTS).is_file()


def export_dir_of(path: str | Path) -> Path | None:
    """The exported folder ``path`` names (the folder, or its model.safetensors), or None.

    A directory holding last.ckpt/best.ckpt stays a checkpoint directory.
    """
    p = user_path(path)
    if p.is_file() and p.suffix == ".safetensors":
        p = p.parent
    if not p.is_dir() or any((p / name).is_file() for name in CHECKPOINT_NAMES):
        return None
    return p if is_export_dir(p) else None


def _export_dir(path: str | Path) -> Path:
    """``path`` as an export folder, or a one-line error saying what is missing."""
    d = user_path(path)
    if not d.is_dir():
        raise TinyLLMError(f"export directory {d} does not exist: run `tinyllm export --out_dir {d}` first")
    if not is_export_dir(d):
        raise TinyLLMError(f"{d} is not an exported model: it needs {CONFIG} and {WEIGHTS} (run `tinyllm export`)")
    return d


# ----------------------------------------------------------------------------- loading an export


def export_parts(path: str | Path) -> ModelParts:
    """The architecture, weights, tokenizer and training record of an exported folder.

    Reads JSON and safetensors only: nothing in the folder is unpickled or executed.
    """
    d = _export_dir(path)
    _, section, config = read_export_config(d)
    try:
        tensors = load_file(d / WEIGHTS, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise TinyLLMError(f"{d / WEIGHTS} is not a readable safetensors file ({one_line(str(e), 120)})") from None
    training = dict(section["training"])  # re-exporting a folder: its training record carries over
    metrics = {}
    if isinstance(training.get(BEST_VAL_LOSS), (int, float)):
        metrics[BEST_VAL_LOSS] = float(training[BEST_VAL_LOSS])
    weights = state_from_export(tensors, config, d / WEIGHTS)
    return ModelParts(config, weights, section["tokenizer"], d, training.get("step"), metrics, training)


def check_export(path: str | Path) -> dict[str, Any]:
    """Check a folder is a complete, consistent export without building the model; its config.json.

    Every tensor must be present with the right shape (read from the safetensors
    header only), and the model card must describe these very weights (its
    sha256 of model.safetensors must match).
    """
    d = _export_dir(path)
    cfg, _, config = read_export_config(d)
    missing = [name for name in FILES if not (d / name).is_file()]
    if missing:
        raise TinyLLMError(f"{d} is incomplete: {', '.join(missing)} missing; re-run `tinyllm export`")
    try:
        with safe_open(d / WEIGHTS, framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise TinyLLMError(f"{d / WEIGHTS} is not a readable safetensors file ({one_line(str(e), 120)})") from None
    state_from_export({k: torch.empty(s, device="meta") for k, s in shapes.items()}, config, d / WEIGHTS)
    card = (d / CARD).read_bytes() if (d / CARD).is_file() else b""  # any bytes: an edited card may not be UTF-8
    digest = sha256_of(d / WEIGHTS)
    if digest.encode() not in card:
        raise TinyLLMError(
            f"{d / CARD} does not describe these weights (model.safetensors has sha256 {digest[:12]}…, "
            "which the card does not name): re-run `tinyllm export`"
        )
    return cfg


# ----------------------------------------------------------------------------- export


def written_by_export(folder: Path) -> bool:
    """Does the folder's config.json carry tinyllm's section? (Another model's folder has the same two files.)"""
    try:
        cfg = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(cfg, dict) and isinstance(cfg.get("tinyllm"), dict)


def check_out_dir(out: Path) -> None:
    """Refuse to write over anything but an earlier export holding only export's own files."""
    if out.exists() and not out.is_dir():
        raise TinyLLMError(f"--out_dir {out} is a file: choose a folder")
    if out.is_dir():
        present = sorted(p.name for p in out.iterdir())
        if present and not (is_export_dir(out) and written_by_export(out)):
            raise TinyLLMError(f"--out_dir {out} is not empty and not an export: choose a new folder")
        foreign = [name for name in present if name not in FILES]
        if foreign:
            raise TinyLLMError(
                f"--out_dir {out} holds files export did not write ({', '.join(foreign[:3])}): "
                "choose a new folder or move them away"
            )
    check_writable_folder(out.parent, "--out_dir")  # the export is built beside its place, then renamed into it


def write_export(
    model: GPT,
    tokenizer: Tokenizer,
    out_dir: str | Path,
    training: dict[str, Any] | None = None,
    data: str | None = None,
    verify: bool = True,
    data_dir: str | Path | None = None,
    repo_id: str | None = None,
    measured: Measured | None = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` as an export folder (see the module docstring); returns the folder.

    The card's usage lines load ``repo_id`` (where the folder will be published) or else ``out_dir``
    as given.

    The folder is assembled beside ``out_dir`` and renamed into place, so a
    failed export leaves no half-written folder. ``verify`` loads the result with
    transformers, when installed, and refuses to finish if it disagrees.
    """
    out = user_path(out_dir).resolve()
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    training = dict(training or {})
    config = model.config
    model = model.eval()
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    old = out.with_name(f".{out.name}.old")  # an earlier export, while the new one is renamed into place
    try:
        os.chmod(tmp, 0o777 & ~umask())
        save_file(export_state(model), tmp / WEIGHTS, metadata={"format": "pt"})
        hf_tokenizer(tokenizer, data_dir).save(str(tmp / TOKENIZER))
        _write_json(tmp / TOKENIZER_CONFIG, tokenizer_config(tokenizer, config.block_size))
        section = ExportSection(format_version=FORMAT_VERSION, weights_layout=layout_of(config),
                                arch=config.to_dict(), tokenizer=tokenizer.state(), training=training,
                                files=list(FILES))  # fmt: skip
        _write_json(tmp / CONFIG, hf_config(config, tokenizer, section))
        hf_check = check_with_transformers(tmp, model, tokenizer) if verify else None
        files = {name: (tmp / name).stat().st_size for name in FILES if name != CARD}
        card = model_card(repo_id or str(out_dir), model, tokenizer, training, data,
                          ExportFacts(files, sha256_of(tmp / WEIGHTS), hf_check), measured)
        (tmp / CARD).write_text(card, encoding="utf-8")
        for name in FILES:  # safetensors writes 0600; give every file the usual permissions
            os.chmod(tmp / name, 0o666 & ~umask())
        if out.exists():  # an earlier export of only our files (checked above): set aside until the new one is in
            shutil.rmtree(old, ignore_errors=True)  # left by an export killed between the two renames
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)  # the earlier export back in place, whole
        raise
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")

