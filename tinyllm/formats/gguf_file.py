"""GGUF: one file that llama.cpp (and Ollama, LM Studio, everything built on it) runs.

Written with llama.cpp's own writer, the ``gguf`` package, as llama.cpp's
``convert_hf_to_gguf.py`` writes a Llama: the same tensor names, metadata keys
and tokenizer fields. Only LLaMA-shaped models (RMSNorm, SwiGLU, RoPE, no
biases) have a llama.cpp architecture that computes them.

Two things differ from the safetensors export:

* **RoPE pairs.** tinyllm (like Hugging Face) rotates channel i with i + D/2;
  llama.cpp's ``llama`` rotates neighbours 2i and 2i+1. Permuting the rows of
  W_q and W_k per head (0, D/2, 1, D/2+1, …) gives the same attention scores.
* **The tokenizer** is stored inside the file. GPT-2 BPE is llama.cpp's
  ``gpt2`` model: byte-level tokens and the merges. So is a BPE trained on
  your corpus (``bpe:N``): its tokens, merges and ``<|endoftext|>`` are read
  from its tokenizer.json, with the same pre-tokenizer (GPT-2's regex). A char vocabulary is the
  same model with no merges: each character is its own byte-level token, which
  is exact when every character is one byte (ASCII), as Tiny Shakespeare's are.
  llama.cpp needs an end-of-text token (without one it takes id 11, which
  would be a character, and stop there), so a char model gains one, after its
  characters, with a zero embedding row: its logit is 0, far below a trained
  model's top logits, so greedy decoding never picks it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import EOT, BPETokenizer, CharTokenizer, GPT2Tokenizer, Tokenizer, read_ranks
from tinyllm.errors import TinyLLMError
from tinyllm.files import gpt2_ranks_path, umask, user_path
from tinyllm.formats.hf_tokenizer import byte_level_text, gpt2_vocab_and_merges

GGUF_EXTRA = "pip install -e '.[gguf]' (or: pip install gguf)"
GGUFDtype = Literal["f32", "f16"]  # the weight matrices' type: f32 exact, f16 half the size
NUL = byte_level_text(b"\x00")

# tinyllm's parameter names -> llama.cpp's (per block: blk.N.<name>)
_BLOCK_NAMES = {
    "input_norm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_norm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_TOP_NAMES = {
    "embed_tokens.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_name(name: str) -> str:
    """llama.cpp's name for a tinyllm parameter."""
    if name.startswith("layers."):
        _, index, rest = name.split(".", 2)
        return f"blk.{index}.{_BLOCK_NAMES[rest]}"
    return _TOP_NAMES[name]


def interleave_rope_rows(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder each head's output rows from halves (i, i + D/2) to neighbours (2i, 2i+1)."""
    out, rest = weight.shape[0], weight.shape[1:]
    return weight.reshape(n_head, 2, out // n_head // 2, *rest).transpose(1, 2).reshape(weight.shape)


def gguf_tensors(model: GPT, dtype: GGUFDtype = "f32", n_vocab: int | None = None) -> dict[str, np.ndarray]:
    """The model's weights under llama.cpp's names; matrices in ``dtype``, norms always float32 (llama.cpp's rule).

    ``n_vocab`` > the model's vocabulary adds zero rows to the embedding and head (tokens it never predicts).
    """
    config = model.config
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue  # without output.weight, llama.cpp reuses token_embd: the tie
        t = tensor.detach().to("cpu", torch.float32)
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            t = interleave_rope_rows(t, config.n_head)
        if name in ("embed_tokens.weight", "lm_head.weight") and n_vocab and n_vocab > t.shape[0]:
            t = torch.cat([t, t.new_zeros(n_vocab - t.shape[0], t.shape[1])])
        array = t.contiguous().numpy()
        tensors[gguf_name(name)] = array.astype(np.float16) if dtype == "f16" and array.ndim == 2 else array
    return tensors


def bpe_tokens_and_merges(tokenizer: BPETokenizer) -> tuple[list[str], list[str]]:
    """A trained BPE's tokens in id order and its merges as ``"left right"`` lines in priority order.

    Both come from its tokenizer.json; the tokens are byte-level strings, which is how llama.cpp's ``gpt2``
    model reads them.
    """
    model = json.loads(tokenizer.to_json())["model"]
    vocab = dict(model["vocab"])
    vocab[EOT] = tokenizer.eot_id
    by_id = {i: t for t, i in vocab.items()}
    if sorted(by_id) != list(range(tokenizer.vocab_size)):
        raise TinyLLMError("the BPE tokenizer's ids are not 0..N-1 without gaps: train it again with tinyllm")
    # tokenizers >= 0.20 writes merges as pairs, older ones as "left right" strings; byte-level tokens have no spaces
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in model["merges"]]
    return [by_id[i] for i in range(len(by_id))], merges


def gguf_vocabulary(
    tokenizer: Tokenizer, vocab_size: int, data_dir: str | Path | None
) -> tuple[list[str], list[int], list[str], int]:
    """Token strings, token types, merges and the end-of-text id, in llama.cpp's ``gpt2`` tokenizer form.

    The list is padded to the model's ``vocab_size`` (rows of the embedding) with unused tokens; a char
    vocabulary gets an end-of-text token after that (see the module docstring).
    """
    import gguf

    if isinstance(tokenizer, GPT2Tokenizer):
        vocab, merges = gpt2_vocab_and_merges(read_ranks(gpt2_ranks_path(data_dir)))
        eot = GPT2Tokenizer.eot_id
        vocab[EOT] = eot
        tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        types = [gguf.TokenType.CONTROL if i == eot else gguf.TokenType.NORMAL for i in range(len(tokens))]
        merge_lines = [f"{a} {b}" for a, b in merges]
    elif isinstance(tokenizer, BPETokenizer):
        tokens, merge_lines = bpe_tokens_and_merges(tokenizer)
        eot = tokenizer.eot_id
        types = [gguf.TokenType.CONTROL if i == eot else gguf.TokenType.NORMAL for i in range(len(tokens))]
    elif isinstance(tokenizer, CharTokenizer):
        wide = sorted({ch for ch in tokenizer.chars if len(ch.encode("utf-8")) != 1})
        if wide:
            raise TinyLLMError(
                f"GGUF cannot hold this char vocabulary exactly: llama.cpp splits {''.join(wide[:5])!r} into "
                "several bytes, which are not tokens here; export --format hf instead"
            )
        tokens = [byte_level_text(ch.encode("utf-8")) for ch in tokenizer.chars]
        # llama.cpp requires a merges list; this one pairs the NUL byte with itself, which merges nothing
        # that is a token (and a merged symbol that is not a token falls back to its bytes).
        types, merge_lines, eot = [gguf.TokenType.NORMAL] * len(tokens), [f"{NUL} {NUL}"], None
    else:
        raise TinyLLMError(
            f"cannot export a {tokenizer.name!r} tokenizer to GGUF: only char, gpt2 and bpe are supported"
        )
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
    if eot is None:
        eot = len(tokens)
        tokens.append(EOT)
        types.append(gguf.TokenType.CONTROL)
    return tokens, [int(t) for t in types], merge_lines, eot


def write_gguf(
    model: GPT, tokenizer: Tokenizer, path: str | Path, name: str, dtype: GGUFDtype = "f32",
    data_dir: str | Path | None = None,
) -> Path:
    """Write ``model`` and its tokenizer as one GGUF file at ``path`` (atomically: temp file, then rename)."""
    try:
        import gguf
    except ImportError:
        raise TinyLLMError(f"export --format gguf needs llama.cpp's gguf package: {GGUF_EXTRA}") from None
    config = model.config
    if not config.is_llama_shaped:
        raise TinyLLMError(
            f"GGUF export needs a LLaMA-shaped model and this one has {', '.join(config.llama_differences())}: "
            "llama.cpp has no architecture for it; use --format hf"
        )
    if dtype not in get_args(GGUFDtype):
        raise TinyLLMError(f"--dtype must be {' or '.join(get_args(GGUFDtype))} for GGUF, not {dtype!r}")
    tokens, types, merges, eot = gguf_vocabulary(tokenizer, config.vocab_size, data_dir)
    out = user_path(path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, "llama")
        writer.add_name(name)
        writer.add_context_length(config.block_size)
        writer.add_embedding_length(config.n_embd)
        writer.add_block_count(config.n_layer)
        writer.add_feed_forward_length(config.hidden_dim)
        writer.add_head_count(config.n_head)
        writer.add_head_count_kv(config.n_head)  # no grouped-query attention
        writer.add_rope_dimension_count(config.head_dim)
        writer.add_rope_freq_base(config.rope_theta)
        writer.add_layer_norm_rms_eps(config.norm_eps)
        writer.add_vocab_size(len(tokens))
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(eot)
        writer.add_eos_token_id(eot)
        writer.add_add_bos_token(False)  # tinyllm was trained without a BOS token
        for tensor_name, array in gguf_tensors(model, dtype, len(tokens)).items():
            writer.add_tensor(tensor_name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
