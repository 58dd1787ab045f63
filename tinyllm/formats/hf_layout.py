"""The Hugging Face layout of an exported folder: file names, tensor names, config.json.

When the model is LLaMA-shaped (``GPTConfig.is_llama_shaped``: RMSNorm, SwiGLU,
RoPE, no biases) the folder is a ``LlamaForCausalLM`` checkpoint: the weights use
Hugging Face's Llama names and config.json is a ``LlamaConfig``. Export is a
renaming, nothing else: tinyllm's RoPE already pairs channel i with i + D/2 and
uses θ^(-2i/D), as Hugging Face's Llama does, so q/k rows need no permutation
(tests/formats/test_hf_parity.py compares the two models' logits). Any other
model keeps tinyllm's own tensor names and says ``model_type: tinyllm``: no
Hugging Face architecture computes it, so the folder does not claim one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

import torch

from tinyllm.core.config import GPTConfig
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import Tokenizer
from tinyllm.errors import ConfigError, TinyLLMError, one_line

FORMAT_VERSION = 1


class ExportSection(TypedDict):
    """config.json's "tinyllm" section: what tinyllm, and only tinyllm, reads back from an exported folder."""

    format_version: int  # FORMAT_VERSION when written: a reader refuses newer ones
    weights_layout: str  # layout_of(config): "llama" or "tinyllm" tensor names
    arch: dict[str, Any]  # GPTConfig.to_dict()
    tokenizer: dict[str, Any]  # the tokenizer's state()
    training: dict[str, Any]  # the run's record (steps, best val loss, options): carried over by a re-export
    files: list[str]  # the folder's files, FILES when written


WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
GGUF = "model.gguf"  # export --format gguf: the one file llama.cpp runs
FILES = (WEIGHTS, CONFIG, TOKENIZER, TOKENIZER_CONFIG, CARD)  # everything export writes, and publish uploads
HF_EXTRA = "pip install -e '.[hf]' (or: pip install transformers huggingface_hub)"


# ----------------------------------------------------------------------------- weights: names and layout


_LLAMA_RENAMES = {"input_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm"}


def export_name(name: str, layout: str) -> str:
    """The exported name of tinyllm's parameter ``name``.

    Llama layout: everything but the head sits under ``model.``, and the two
    norms of a block take Hugging Face's names (``layers.0.input_norm.weight`` →
    ``model.layers.0.input_layernorm.weight``). tinyllm layout: unchanged.
    """
    if layout != "llama" or name == "lm_head.weight":
        return name
    return "model." + ".".join(_LLAMA_RENAMES.get(part, part) for part in name.split("."))


def layout_of(config: GPTConfig) -> str:
    return "llama" if config.is_llama_shaped else "tinyllm"


def export_state(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights under their exported names, float32 and contiguous.

    A tied output head is the embedding matrix: it is stored once (safetensors
    refuses shared tensors, and Hugging Face re-ties it from ``tie_word_embeddings``).
    """
    layout = layout_of(model.config)
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_embeddings:
            continue
        state[export_name(name, layout)] = tensor.detach().to("cpu", torch.float32).contiguous()
    return state


def _expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """tinyllm name → shape of every tensor a model of ``config`` holds (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = GPT(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def state_from_export(state: dict[str, torch.Tensor], config: GPTConfig, where: Path) -> dict[str, torch.Tensor]:
    """Exported tensors → tinyllm's state dict, with one-line errors for missing, extra or misshapen tensors."""
    layout = layout_of(config)
    out, used = {}, set()
    for name, shape in _expected_shapes(config).items():
        source = "embed_tokens.weight" if name == "lm_head.weight" and config.tie_embeddings else name
        key = export_name(source, layout)
        if key not in state:
            raise TinyLLMError(f"{where} has no tensor {key!r}: the weights do not match config.json; re-export")
        if tuple(state[key].shape) != shape:
            raise TinyLLMError(
                f"{where}: tensor {key!r} has shape {tuple(state[key].shape)}, config.json implies {shape}; re-export"
            )
        out[name] = state[key]
        used.add(key)
    extra = sorted(set(state) - used)
    if extra:
        raise TinyLLMError(
            f"{where} holds tensors its config.json does not describe ({', '.join(extra[:3])}); re-export"
        )
    return out


# ----------------------------------------------------------------------------- config.json


def llama_config(config: GPTConfig, eot_id: int | None) -> dict[str, Any]:
    """A ``LlamaConfig`` dict that makes ``LlamaForCausalLM`` compute exactly ``config``'s function.

    ``rope_theta`` is written both at the top (transformers 4.x) and in
    ``rope_parameters`` (transformers 5.x). The key/value heads equal the heads:
    tinyllm has no grouped-query attention. ``eot_id`` (the tokenizer's
    end-of-text id; None for char, which has no special ids) is BOS and EOS.
    """
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_head,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": config.tie_embeddings,
        "initializer_range": GPT.init_std,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "pad_token_id": None,
        "torch_dtype": "float32",
    }


def hf_config(config: GPTConfig, tokenizer: Tokenizer, tinyllm_section: ExportSection) -> dict[str, Any]:
    """config.json: a LlamaConfig for LLaMA-shaped models, else a plain ``model_type: tinyllm`` config."""
    if config.is_llama_shaped:
        base = llama_config(config, tokenizer.eot_id)
    else:  # no Hugging Face architecture computes this model: claim none
        base = {"model_type": "tinyllm", "torch_dtype": "float32"}
    return {**base, "tinyllm": tinyllm_section}


def read_export_config(d: Path) -> tuple[dict[str, Any], dict[str, Any], GPTConfig]:
    """config.json, its "tinyllm" section and the GPTConfig in it, checked; one-line errors otherwise.

    Loading a folder and ``check_export`` (before a publish) both read it here, so both refuse the same
    malformed sections; the tokenizer's own fields are checked when it is built.
    """
    path = d / CONFIG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TinyLLMError(f"{path} is not readable JSON ({one_line(str(e), 120)}): re-export the model") from None
    section = cfg.get("tinyllm") if isinstance(cfg, dict) else None
    if not isinstance(section, dict) or not isinstance(section.get("arch"), dict) or "tokenizer" not in section:
        raise TinyLLMError(
            f"{path} has no 'tinyllm' section: {d} was not written by `tinyllm export` "
            "(tinyllm cannot tell the tokenizer of other Hugging Face models)"
        )
    version = section.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise TinyLLMError(
            f"{d} was exported in format {section.get('format_version')}, newer than this tinyllm reads "
            f"({FORMAT_VERSION}): upgrade tinyllm"
        )
    try:
        config = GPTConfig.from_dict(section["arch"])
    except (ConfigError, TypeError) as e:
        raise TinyLLMError(f"{path} has an invalid architecture: {e}") from None
    if not isinstance(section["tokenizer"], dict):
        raise TinyLLMError(f"{path}: the tokenizer in its tinyllm section is incomplete; re-export the model")
    if section.get("training") is None:  # none recorded: an empty record
        section["training"] = {}
    if not isinstance(section["training"], dict):
        raise TinyLLMError(f"{path}: the training record in its tinyllm section is not an object; re-export the model")
    files = section.get("files", [])
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        raise TinyLLMError(f"{path}: 'files' in its tinyllm section is not a list of file names; re-export the model")
    layout = section.get("weights_layout")
    if layout != layout_of(config):
        raise TinyLLMError(f"{path}: weights_layout {layout!r} does not fit its architecture; re-export the model")
    if layout == "llama":  # transformers reads the Llama keys: they must describe the same model as ours
        expected = llama_config(config, None)  # the keys compared below do not depend on the tokenizer
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                    "tie_word_embeddings", "hidden_act"):  # fmt: skip
            if cfg.get(key) != expected[key]:
                raise TinyLLMError(
                    f"{path}: {key}={cfg.get(key)!r} disagrees with its tinyllm section ({expected[key]!r}): "
                    "the file was edited; re-export the model"
                )
    return cfg, section, config
