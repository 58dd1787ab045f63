"""``python -m tinyllm export``: a checkpoint as a shareable folder (safetensors, Llama layout when LLaMA-shaped)."""

from __future__ import annotations

import math
from pathlib import Path

from safetensors import safe_open

from tinyllm.files import fmt_bytes
from tinyllm.formats.folder import export as export_folder
from tinyllm.formats.hf_layout import WEIGHTS, read_export_config


def export(
    ckpt_path: str,
    out_dir: str,
    data: str | None = None,
    verify: bool = True,
    data_dir: str | None = None,
    repo_id: str | None = None,
) -> None:
    """Write a checkpoint as a shareable folder: model.safetensors, config.json, tokenizer, model card.

    Args:
        ckpt_path: a .ckpt file, a run folder holding last.ckpt, or an exported folder to re-export.
        out_dir: the folder to write (new, or an earlier export).
        data: a line describing the training data, for the card.
        verify: check the folder with transformers, if installed.
        data_dir: gpt2.tiktoken's folder ($TINYLLM_DATA_DIR).
        repo_id: USER/NAME that the card's usage lines load.
    """
    out = export_folder(ckpt_path, out_dir, data, verify, data_dir, repo_id)
    _, section, config = read_export_config(out)
    kind = "LlamaForCausalLM (Hugging Face Llama layout)" if config.is_llama_shaped else "tinyllm layout (not a Llama)"
    print(f"exported {_count_params(out):,} parameters to {out}: {kind}")
    for name in section["files"]:
        print(f"  {name:<22} {fmt_bytes((out / name).stat().st_size):>10}")
    print(f"next: python -m tinyllm generate --ckpt_path {out}   |   "
          f"python -m tinyllm publish --export_dir {out} --repo_id USER/NAME --dry_run true")  # fmt: skip


def _count_params(folder: Path) -> int:
    with safe_open(folder / WEIGHTS, framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
