"""Share a model: a folder of safetensors and JSON that tinyllm and Hugging Face both load.

    python -m tinyllm export --ckpt_path checkpoints/quick/best.ckpt --out_dir exports/quick

writes

    model.safetensors      the weights, float32 (safetensors: no pickle, nothing to execute)
    config.json            a Hugging Face config, with tinyllm's own config under the "tinyllm" key
    tokenizer.json         the tokenizer, for Hugging Face's ``tokenizers`` / ``AutoTokenizer``
    tokenizer_config.json
    README.md              the model card, generated from the checkpoint (never written by hand)

When the model is LLaMA-shaped (``GPTConfig.is_llama_shaped``: RMSNorm, SwiGLU,
RoPE, no biases) the folder is a ``LlamaForCausalLM`` checkpoint: the weights use
Hugging Face's Llama names and config.json is a ``LlamaConfig``. Export is a
renaming, nothing else: tinyllm's RoPE already pairs channel i with i + D/2 and
uses θ^(-2i/D), as Hugging Face's Llama does, so q/k rows need no permutation
(tests/test_export.py compares the two models' logits). Any other model keeps
tinyllm's own tensor names and says ``model_type: tinyllm``: no Hugging Face
architecture computes it, so the folder does not claim one.

tinyllm loads the folder back (``load_export``, and ``load_model`` / ``--ckpt_path``
accept the folder) with bit-identical logits, reading only safetensors and JSON.

Plain PyTorch: this module does not import Lightning. ``tokenizers`` (tokenizer
files) and ``transformers`` (the parity check at export time) are optional
dependencies, the ``hf`` extra.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from tinyllm.card import WEIGHTS, ExportFacts, fmt_bytes, model_card, training_info
from tinyllm.checkpoint import LoadedModel, model_from_checkpoint, read_checkpoint
from tinyllm.config import GPTConfig
from tinyllm.errors import ConfigError, TinyLLMError, one_line, parse_args
from tinyllm.files import sha256_of, umask
from tinyllm.model import GPT
from tinyllm.tokenizers import GPT2_EOT, CharTokenizer, GPT2Tokenizer, Tokenizer, read_ranks, tokenizer_from_state

FORMAT_VERSION = 1
CONFIG = "config.json"
CARD = "README.md"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
FILES = (WEIGHTS, CONFIG, TOKENIZER, TOKENIZER_CONFIG, CARD)  # everything export writes, and publish uploads
HF_PARITY_TOLERANCE = 1e-3  # export refuses to claim Llama compatibility beyond this max |Δlogit| (tests ask 1e-4)
HF_EXTRA = "pip install -e '.[hf]' (or: pip install tokenizers transformers huggingface_hub)"


def is_export_dir(path: str | Path) -> bool:
    """A folder written by ``tinyllm export`` (or at least shaped like one: config.json + model.safetensors)."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG).is_file() and (p / WEIGHTS).is_file()


def _export_dir(path: str | Path) -> Path:
    """``path`` as an export folder, or a one-line error saying what is missing."""
    d = Path(path).expanduser()
    if not d.is_dir():
        raise TinyLLMError(f"export directory {d} does not exist: run `tinyllm export --out_dir {d}` first")
    if not is_export_dir(d):
        raise TinyLLMError(f"{d} is not an exported model: it needs {CONFIG} and {WEIGHTS} (run `tinyllm export`)")
    return d


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


def llama_config(config: GPTConfig, tokenizer_kind: str) -> dict[str, Any]:
    """A ``LlamaConfig`` dict that makes ``LlamaForCausalLM`` compute exactly ``config``'s function.

    ``rope_theta`` is written both at the top (transformers 4.x) and in
    ``rope_parameters`` (transformers 5.x). The key/value heads equal the heads:
    tinyllm has no grouped-query attention.
    """
    eot = GPT2Tokenizer.vocab_size - 1 if tokenizer_kind == "gpt2" else None  # char models have no special ids
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
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": None,
        "torch_dtype": "float32",
    }


def hf_config(config: GPTConfig, tokenizer: Tokenizer, tinyllm_section: dict[str, Any]) -> dict[str, Any]:
    """config.json: a LlamaConfig for LLaMA-shaped models, else a plain ``model_type: tinyllm`` config."""
    if config.is_llama_shaped:
        base = llama_config(config, tokenizer.name)
    else:  # no Hugging Face architecture computes this model: claim none
        base = {"model_type": "tinyllm", "torch_dtype": "float32"}
    return {**base, "tinyllm": tinyllm_section}


def read_export_config(d: Path) -> tuple[dict[str, Any], dict[str, Any], GPTConfig]:
    """config.json, its "tinyllm" section and the GPTConfig in it, checked; one-line errors otherwise."""
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
    layout = section.get("weights_layout")
    if layout != layout_of(config):
        raise TinyLLMError(f"{path}: weights_layout {layout!r} does not fit its architecture; re-export the model")
    if layout == "llama":  # transformers reads the Llama keys: they must describe the same model as ours
        expected = llama_config(config, _tokenizer_name(section["tokenizer"]))
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                    "tie_word_embeddings", "hidden_act"):  # fmt: skip
            if cfg.get(key) != expected[key]:
                raise TinyLLMError(
                    f"{path}: {key}={cfg.get(key)!r} disagrees with its tinyllm section ({expected[key]!r}): "
                    "the file was edited; re-export the model"
                )
    return cfg, section, config


def _tokenizer_name(state: dict[str, Any]) -> str:
    return state.get("kind", "?") if isinstance(state, dict) else "?"


# ----------------------------------------------------------------------------- loading an export


def load_export(
    path: str | Path, device: str | torch.device = "cpu", data_dir: str | Path | None = None
) -> LoadedModel:
    """The GPT and tokenizer of an exported folder, in eval mode on ``device``.

    Reads JSON and safetensors only: nothing in the folder is unpickled or executed.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = _export_dir(path)
    _, section, config = read_export_config(d)
    try:
        tokenizer = tokenizer_from_state(section["tokenizer"], data_dir)
    except (KeyError, TypeError):
        raise TinyLLMError(f"{d / CONFIG}: the tokenizer in its tinyllm section is incomplete; re-export") from None
    if tokenizer.vocab_size > config.vocab_size:
        raise TinyLLMError(
            f"{d}: the tokenizer has {tokenizer.vocab_size} ids, the model only {config.vocab_size}; re-export"
        )
    try:
        tensors = load_file(d / WEIGHTS, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise TinyLLMError(f"{d / WEIGHTS} is not a readable safetensors file ({one_line(str(e), 120)})") from None
    model = GPT(config)
    model.load_state_dict(state_from_export(tensors, config, d / WEIGHTS))
    training = section.get("training") or {}
    metrics = {}
    if isinstance(training.get("best_val_loss"), (int, float)):
        metrics["best_val_loss"] = float(training["best_val_loss"])
    return LoadedModel(model.to(device).eval(), tokenizer, d, training.get("step"), metrics)


def check_export(path: str | Path) -> dict[str, Any]:
    """Check a folder is a complete, consistent export without building the model; its config.json.

    Every tensor must be present with the right shape (read from the safetensors
    header only), and the model card must describe these very weights (its
    sha256 of model.safetensors must match).
    """
    from safetensors import SafetensorError, safe_open

    d = _export_dir(path)
    cfg, section, config = read_export_config(d)
    missing = [name for name in FILES if not (d / name).is_file()]
    if missing:
        raise TinyLLMError(f"{d} is incomplete: {', '.join(missing)} missing; re-run `tinyllm export`")
    try:
        with safe_open(d / WEIGHTS, framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise TinyLLMError(f"{d / WEIGHTS} is not a readable safetensors file ({one_line(str(e), 120)})") from None
    state_from_export({k: torch.empty(s, device="meta") for k, s in shapes.items()}, config, d / WEIGHTS)
    card = (d / CARD).read_text(encoding="utf-8") if (d / CARD).is_file() else ""
    digest = sha256_of(d / WEIGHTS)
    if digest not in card:
        raise TinyLLMError(
            f"{d / CARD} does not describe these weights (model.safetensors has sha256 {digest[:12]}…, "
            "which the card does not name): re-run `tinyllm export`"
        )
    return cfg


# ----------------------------------------------------------------------------- Hugging Face tokenizer files


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map (Radford et al., 2019; openai/gpt-2 encoder.py).

    Printable Latin-1 bytes map to themselves; the other 68 bytes to chr(256 + n),
    so every byte sequence becomes a string without spaces or control characters.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, n = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


def gpt2_vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Hugging Face BPE vocabulary and merges reconstructed from tiktoken's ranks.

    tiktoken stores only ranks: token bytes → id, where id = merge order. The
    merge that created the token of rank r is found by running BPE on its bytes
    with the merges of rank < r only: that leaves exactly two parts. GPT-2 has
    50,000 merges (ranks 256…50255); each is listed once, in rank order, which
    is what Hugging Face's BPE applies by priority.
    """
    to_str = _bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(to_str[x] for x in b)

    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best = min(
                (ranks.get(parts[i] + parts[i + 1], math.inf), i) for i in range(len(parts) - 1)
            )
            if best[0] >= rank:
                break
            i = best[1]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 2 or parts[0] + parts[1] != token:
            raise TinyLLMError(f"the GPT-2 ranks file is inconsistent at rank {rank}: re-download gpt2.tiktoken")
        merges.append((text(parts[0]), text(parts[1])))
    vocab = {text(token): rank for token, rank in ranks.items()}
    return vocab, merges


PROBE_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?  It's the east...\n\n"
    "  1604 -- naïve café, 東京 ☃ we'll they're\t\ttabs\r\n   "
)


def hf_tokenizer(tokenizer: Tokenizer, data_dir: str | Path | None = None):
    """A ``tokenizers.Tokenizer`` that gives the same ids as ``tokenizer`` (checked on a probe text).

    char: a WordLevel model over the characters, after a pre-tokenizer that
    isolates every character; the decoder joins them back without spaces. A
    character outside the vocabulary is an error, as in tinyllm.
    gpt2: byte-level BPE with GPT-2's pre-tokenization regex, its merges rebuilt
    from tiktoken's ranks, and ``<|endoftext|>`` = 50256 as the special token.
    """
    try:
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
        raise TinyLLMError(f"export writes Hugging Face tokenizer files and needs `tokenizers`: {HF_EXTRA}") from None
    if isinstance(tokenizer, CharTokenizer):
        hf = HFTokenizer(models.WordLevel(vocab={ch: i for i, ch in enumerate(tokenizer.chars)}, unk_token="<unk>"))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = decoders.Fuse()
        probe = tokenizer.chars + "".join(ch for ch in PROBE_TEXT if ch in tokenizer.chars)
    elif isinstance(tokenizer, GPT2Tokenizer):
        from tinyllm.files import gpt2_ranks_path

        vocab, merges = gpt2_vocab_and_merges(read_ranks(gpt2_ranks_path(data_dir)))
        vocab[GPT2_EOT] = GPT2Tokenizer.vocab_size - 1
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        hf.post_processor = processors.ByteLevel(trim_offsets=False)
        hf.add_special_tokens([AddedToken(GPT2_EOT, special=True)])
        probe = PROBE_TEXT
    else:
        raise TinyLLMError(f"cannot export a {tokenizer.name!r} tokenizer: only char and gpt2 are supported")
    ours, theirs = tokenizer.encode(probe), hf.encode(probe, add_special_tokens=False).ids
    if ours != theirs or hf.decode(theirs) != probe:
        raise TinyLLMError(f"the Hugging Face {tokenizer.name} tokenizer disagrees with tinyllm's; please report this")
    return hf


def tokenizer_config(tokenizer: Tokenizer, block_size: int) -> dict[str, Any]:
    """tokenizer_config.json: load tokenizer.json as it is (PreTrainedTokenizerFast), no spaces cleaned up."""
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,
    }
    if tokenizer.name == "gpt2":
        eot_id = str(GPT2Tokenizer.vocab_size - 1)
        cfg.update(bos_token=GPT2_EOT, eos_token=GPT2_EOT, unk_token=GPT2_EOT, add_bos_token=False,
                   added_tokens_decoder={eot_id: {"content": GPT2_EOT, "lstrip": False, "normalized": False,
                                                  "rstrip": False, "single_word": False, "special": True}})  # fmt: skip
    return cfg


# ----------------------------------------------------------------------------- transformers parity at export time


def check_with_transformers(folder: Path, model: GPT, tokenizer: Tokenizer) -> dict[str, Any] | None:
    """Load ``folder`` with transformers and compare: logits (Llama layout) and tokenizer ids.

    Returns what was measured, or None when transformers is not installed.
    Refuses (TinyLLMError) when transformers computes something else.
    """
    try:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        return None
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        result: dict[str, Any] = {"transformers_version": transformers.__version__}
        hf_tok = AutoTokenizer.from_pretrained(folder)
        probe = PROBE_TEXT if tokenizer.name == "gpt2" else "".join(c for c in PROBE_TEXT if c in tokenizer.chars)
        probe = probe or tokenizer.decode([0])
        if hf_tok(probe, add_special_tokens=True)["input_ids"] != tokenizer.encode(probe):
            raise TinyLLMError("transformers' AutoTokenizer gives other ids than tinyllm's tokenizer: please report it")
        result["tokenizer_class"] = type(hf_tok).__name__
        if model.config.is_llama_shaped:
            hf_model = AutoModelForCausalLM.from_pretrained(folder).eval()
            n = min(model.config.block_size, 64)
            ids = torch.randint(0, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(0))
            device = model.embed_tokens.weight.device
            with torch.inference_mode():
                ours = model.float()(ids.to(device)).cpu()
                theirs = hf_model(ids).logits.float()
            diff = (ours - theirs).abs().max().item()
            result.update(architecture=type(hf_model).__name__, tokens=n, max_abs_logit_diff=diff)
            if not diff <= HF_PARITY_TOLERANCE:
                raise TinyLLMError(
                    f"transformers' {type(hf_model).__name__} differs from tinyllm by up to {diff:.3g} in the logits: "
                    "the folder would not be a faithful Llama export; please report this (or pass --verify false)"
                )
        return result
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()


# ----------------------------------------------------------------------------- export


def _load_source(ckpt_path: str | Path, data_dir: str | Path | None) -> tuple[LoadedModel, dict[str, Any]]:
    from tinyllm.checkpoint import export_dir_of

    export_dir = export_dir_of(ckpt_path)
    if export_dir is not None:  # re-exporting a folder: its training record carries over
        loaded = load_export(export_dir, "cpu", data_dir)
        _, section, _ = read_export_config(export_dir)
        return loaded, dict(section.get("training") or {})
    p, ckpt = read_checkpoint(ckpt_path)
    return model_from_checkpoint(p, ckpt, "cpu", data_dir), training_info(p, ckpt)


def _prepare_out_dir(out: Path) -> None:
    """Refuse to write over anything but an earlier export holding only export's own files."""
    if out.exists() and not out.is_dir():
        raise TinyLLMError(f"--out_dir {out} is a file: choose a folder")
    if out.is_dir():
        present = sorted(p.name for p in out.iterdir())
        if present and not is_export_dir(out):
            raise TinyLLMError(f"--out_dir {out} is not empty and not an export: choose a new folder")
        foreign = [name for name in present if name not in FILES]
        if foreign:
            raise TinyLLMError(
                f"--out_dir {out} holds files export did not write ({', '.join(foreign[:3])}): "
                "choose a new folder or move them away"
            )


def write_export(
    model: GPT,
    tokenizer: Tokenizer,
    out_dir: str | Path,
    training: dict[str, Any] | None = None,
    data: str | None = None,
    verify: bool = True,
    data_dir: str | Path | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``model`` and ``tokenizer`` as an export folder (see the module docstring); returns the folder.

    The card's usage lines load ``repo_id`` (where the folder will be published) or else ``out_dir``
    as given.

    The folder is assembled beside ``out_dir`` and renamed into place, so a
    failed export leaves no half-written folder. ``verify`` loads the result with
    transformers, when installed, and refuses to finish if it disagrees.
    """
    out = Path(out_dir).expanduser().resolve()
    _prepare_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    training = dict(training or {})
    config = model.config
    model = model.eval()
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~umask())
        from safetensors.torch import save_file

        save_file(export_state(model), tmp / WEIGHTS, metadata={"format": "pt"})
        hf_tokenizer(tokenizer, data_dir).save(str(tmp / TOKENIZER))
        _write_json(tmp / TOKENIZER_CONFIG, tokenizer_config(tokenizer, config.block_size))
        section = {
            "format_version": FORMAT_VERSION,
            "weights_layout": layout_of(config),
            "arch": config.to_dict(),
            "tokenizer": tokenizer.state(),
            "training": training,
            "files": list(FILES),
        }
        _write_json(tmp / CONFIG, hf_config(config, tokenizer, section))
        hf_check = check_with_transformers(tmp, model, tokenizer) if verify else None
        files = {name: (tmp / name).stat().st_size for name in FILES if name != CARD}
        card = model_card(repo_id or str(out_dir), model, tokenizer, training, data,
                          ExportFacts(files, sha256_of(tmp / WEIGHTS), hf_check))
        (tmp / CARD).write_text(card, encoding="utf-8")
        for name in FILES:  # safetensors writes 0600; give every file the usual permissions
            os.chmod(tmp / name, 0o666 & ~umask())
        if out.exists():
            shutil.rmtree(out)  # an earlier export of only our files (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def export(
    ckpt_path: str | Path,
    out_dir: str | Path,
    data: str | None = None,
    verify: bool = True,
    data_dir: str | Path | None = None,
    repo_id: str | None = None,
) -> Path:
    """Export a training checkpoint (or re-export a folder) to ``out_dir``; returns the folder."""
    loaded, training = _load_source(ckpt_path, data_dir)
    return write_export(loaded.model, loaded.tokenizer, out_dir, training, data, verify, data_dir, repo_id)


# ----------------------------------------------------------------------------- the command


def build_parser():
    from jsonargparse import ArgumentParser

    p = ArgumentParser(
        prog="python -m tinyllm export", exit_on_error=False,
        description="Write a checkpoint as a shareable folder: model.safetensors, config.json, tokenizer, model card.",
    )  # fmt: skip
    p.add_argument("--ckpt_path", type=str, required=True, help="a .ckpt file (or a directory holding last.ckpt)")
    p.add_argument("--out_dir", type=str, required=True, help="the folder to write (new, or an earlier export)")
    p.add_argument("--data", type=str | None, default=None, help="a line describing the training data, for the card")
    p.add_argument("--verify", type=bool, default=True, help="check the folder with transformers, if installed")
    p.add_argument("--data_dir", type=str | None, default=None, help="gpt2.tiktoken's folder ($TINYLLM_DATA_DIR)")
    p.add_argument("--repo_id", type=str | None, default=None, help="USER/NAME the card's usage lines load")
    return p


def main(argv: list[str]) -> None:
    args = parse_args(build_parser(), argv)
    out = export(args.ckpt_path, args.out_dir, args.data, args.verify, args.data_dir, args.repo_id)
    _, section, config = read_export_config(out)
    kind = "LlamaForCausalLM (Hugging Face Llama layout)" if config.is_llama_shaped else "tinyllm layout (not a Llama)"
    print(f"exported {_count_params(out):,} parameters to {out}: {kind}")
    for name in section["files"]:
        print(f"  {name:<22} {fmt_bytes((out / name).stat().st_size):>10}")
    print(f"next: python -m tinyllm generate --ckpt_path {out}   |   "
          f"python -m tinyllm publish --export_dir {out} --repo_id USER/NAME --dry_run true")  # fmt: skip


def _count_params(folder: Path) -> int:
    from safetensors import safe_open

    with safe_open(folder / WEIGHTS, framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
