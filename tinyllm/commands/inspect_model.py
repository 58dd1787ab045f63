"""``python -m tinyllm inspect``: a trained model's insides as four pictures.

    python -m tinyllm inspect --ckpt_path checkpoints/quick/best.ckpt --prompt "ROMEO: ..."

attention.png   layers x heads, each the causal attention weights over the prompt's tokens
logit_lens.png  what each layer's residual stream predicts, and P(true next token)
rope.png        the attention score q·k against relative distance (RoPE models)
kv_cache.png    the KV cache's bytes and the time per token with and without it
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from tinyllm.core.defaults import LOOK_PROMPT
from tinyllm.core.figures import attention_grid, cache_figure, labels_of, logit_lens_figure, rope_figure
from tinyllm.core.insides import attention_maps, cache_cost, logit_lens, rope_curves
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import Tokenizer
from tinyllm.errors import TinyLLMError
from tinyllm.files import check_writable_folder, user_path
from tinyllm.formats.load import load_model

DEFAULT_PROMPT = LOOK_PROMPT + "\nJULIET:\nAy me"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=130)
    return path


def inspect_pictures(model: GPT, tokenizer: Tokenizer, prompt: str, out: Path, new_tokens: int) -> list[Path]:
    """Write the four pictures for ``prompt`` into ``out``; the paths written."""
    ids = tokenizer.encode(prompt)
    if len(ids) < 2:
        raise TinyLLMError("the prompt needs at least 2 tokens (the logit lens scores each next token)")
    if len(ids) > model.config.block_size:
        raise TinyLLMError(f"the prompt is {len(ids)} tokens, more than the model's context of "
                           f"{model.config.block_size}: shorten it")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    labels = labels_of(tokenizer, ids)
    lens = logit_lens(model, ids)
    written = [
        _save(attention_grid(attention_maps(model, ids), labels), out / "attention.png"),
        _save(logit_lens_figure(lens, labels, tokenizer), out / "logit_lens.png"),
    ]
    if model.rope is not None:  # learned positions have no rotation to show
        written.append(_save(rope_figure(rope_curves(model, ids)), out / "rope.png"))
    cost = cache_cost(model, ids[:1], max(2, min(new_tokens, model.config.block_size - 1)))
    written.append(_save(cache_figure(cost), out / "kv_cache.png"))
    return written


def inspect(
    ckpt_path: str,
    prompt: str | None = None,
    out_dir: str | None = None,
    new_tokens: int = 128,
    data_dir: str | None = None,
) -> None:
    """Draw a model's insides for one prompt: attention maps, the logit lens, RoPE, and the KV cache.

    Args:
        ckpt_path: a .ckpt file, a run folder holding last.ckpt, or an exported folder.
        prompt: the text the pictures look at, about 64 characters for readable axes (default: a line of
            Romeo and Juliet, cut to the model's context).
        out_dir: where the PNGs go (default: inspect/<the checkpoint's folder name>).
        new_tokens: tokens generated for the KV-cache picture (at most the context).
        data_dir: gpt2.tiktoken's folder, for BPE models ($TINYLLM_DATA_DIR).
    """
    if new_tokens < 2:
        raise TinyLLMError("--new_tokens must be at least 2")
    source = user_path(ckpt_path).resolve()
    run = source.name if source.is_dir() else source.parent.name
    out = user_path(out_dir) if out_dir else Path("inspect") / run
    check_writable_folder(out, "--out_dir")
    loaded = load_model(ckpt_path, "cpu", data_dir)
    if prompt is None:
        ids = loaded.tokenizer.encode(DEFAULT_PROMPT)[: loaded.model.config.block_size]
        prompt = loaded.tokenizer.decode(ids)
    try:
        written = inspect_pictures(loaded.model, loaded.tokenizer, prompt, out, new_tokens)
    except OSError as e:  # not writable, or a file where the folder should be
        raise TinyLLMError(f"cannot write the pictures to {out} ({e.strerror}): choose another --out_dir") from None
    print(f"inspect: {len(written)} pictures of {source} for a {len(loaded.tokenizer.encode(prompt))}-token prompt")
    for path in written:
        print(f"  {path}")
