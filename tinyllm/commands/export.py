"""``python -m tinyllm export``: a checkpoint as a shareable folder (safetensors, Llama layout when LLaMA-shaped)
or as one GGUF file for llama.cpp."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from safetensors import safe_open

from tinyllm.core.defaults import SAMPLE_TOKENS, SEED, TEMPERATURE, TOP_K, VAL_FRACTION
from tinyllm.errors import TinyLLMError
from tinyllm.files import check_writable_folder, fmt_bytes, user_path
from tinyllm.formats.card import example_prompt
from tinyllm.formats.folder import check_out_dir, write_export
from tinyllm.formats.load import load_model
from tinyllm.formats.gguf_file import GGUFDtype, write_gguf
from tinyllm.formats.hf_layout import GGUF, WEIGHTS, read_export_config
from tinyllm.training.evaluate import measure as measure_now


def export(
    ckpt_path: str,
    out_dir: str,
    format: Literal["hf", "gguf"] = "hf",
    dtype: GGUFDtype = "f32",
    data: str | None = None,
    verify: bool = True,
    data_dir: str | None = None,
    repo_id: str | None = None,
    measure: bool = True,
    data_path: str | None = None,
    val_fraction: float = VAL_FRACTION,
) -> None:
    """Share a checkpoint: a folder that transformers loads (weights, config, tokenizer, model card) or a GGUF file.

    Args:
        ckpt_path: a .ckpt file, a run folder holding last.ckpt, or an exported folder to re-export.
        out_dir: the folder to write (new, or an earlier export).
        format: hf (the folder above, which transformers loads) or gguf (out_dir/model.gguf, which llama.cpp runs;
            LLaMA-shaped models only).
        dtype: the GGUF's weight matrices in f32 (exact) or f16 (half the size); norms stay f32.
        data: a line describing the training data, for the card.
        verify: check the folder with transformers, if installed.
        data_dir: the data folder: gpt2.tiktoken, and input.txt for the measurement ($TINYLLM_DATA_DIR).
        repo_id: USER/NAME that the card's usage lines load.
        measure: measure the val loss (whole held-out split) and a sample now, for the card and its model-index.
        data_path: the text it was trained on, if not Tiny Shakespeare (for the measurement).
        val_fraction: as --data.val_fraction in training (for the measurement).
    """
    if format == "gguf":
        _export_gguf(ckpt_path, Path(out_dir), dtype, data_dir)
        return
    if dtype != "f32":
        raise TinyLLMError("--dtype applies to --format gguf; the Hugging Face folder is float32")
    check_out_dir(user_path(out_dir).resolve())  # before the measurement, not after it
    loaded = load_model(ckpt_path, "cpu", data_dir)
    measured = None
    if measure:
        prompt = example_prompt(loaded.tokenizer)
        measured = measure_now(loaded.model, loaded.tokenizer, data_path, data_dir, val_fraction, prompt, samples=1,
                               max_new_tokens=SAMPLE_TOKENS, seed=SEED)  # fmt: skip
        print(f"measured now: val loss {measured.val_loss:.4f} over {measured.val_tokens:,} tokens of "
              f"{measured.corpus}")
    out = write_export(loaded.model, loaded.tokenizer, out_dir, loaded.training, data, verify, data_dir, repo_id,
                       measured)  # fmt: skip
    _, section, config = read_export_config(out)
    kind = "LlamaForCausalLM (Hugging Face Llama layout)" if config.is_llama_shaped else "tinyllm layout (not a Llama)"
    print(f"exported {_count_params(out):,} parameters to {out}: {kind}")
    for name in section["files"]:
        print(f"  {name:<22} {fmt_bytes((out / name).stat().st_size):>10}")
    print(f"next: python -m tinyllm generate --ckpt_path {out}   |   "
          f"python -m tinyllm publish --export_dir {out} --repo_id USER/NAME --dry_run true")  # fmt: skip


def _export_gguf(ckpt_path: str, out_dir: Path, dtype: GGUFDtype, data_dir: str | None) -> None:
    out_dir = user_path(out_dir)
    target = out_dir / GGUF
    if out_dir.exists() and not out_dir.is_dir():
        raise TinyLLMError(f"--out_dir {out_dir} is a file: choose a folder (the GGUF goes in it as {GGUF})")
    if target.exists() and _magic(target) != b"GGUF":
        raise TinyLLMError(f"{target} exists and is not a GGUF file: choose another --out_dir")
    others = sorted(p.name for p in out_dir.iterdir() if p.name != GGUF) if out_dir.is_dir() else []
    if others:  # another export's folder, or the user's files: a GGUF beside them would mix two models
        raise TinyLLMError(f"--out_dir {out_dir} holds other files ({', '.join(others[:3])}): choose a new folder "
                           f"for {GGUF}")  # fmt: skip
    check_writable_folder(out_dir, "--out_dir")
    loaded = load_model(ckpt_path, "cpu", data_dir)
    source = user_path(ckpt_path).resolve()
    name = source.name if source.is_dir() else source.parent.name  # the run's (or the export's) folder
    try:
        path = write_gguf(loaded.model, loaded.tokenizer, target, name, dtype, data_dir)
    except OSError as e:
        raise TinyLLMError(f"cannot write {target} ({e.strerror}): choose another --out_dir") from None
    print(f"exported {loaded.model.num_parameters():,} parameters to {path} ({fmt_bytes(path.stat().st_size)}, "
          f"GGUF {dtype}, llama architecture)")  # fmt: skip
    prompt = example_prompt(loaded.tokenizer)
    print(f'next: llama-cli -m {path} -p "{prompt}" -n {SAMPLE_TOKENS} --temp {TEMPERATURE} --top-k {TOP_K}'
          "   (llama.cpp)")


def _magic(path: Path) -> bytes:
    """The first 4 bytes of ``path`` (b"" for a folder or an unreadable file)."""
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError:
        return b""


def _count_params(folder: Path) -> int:
    with safe_open(folder / WEIGHTS, framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
