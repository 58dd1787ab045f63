"""Model cards, generated from a checkpoint and measured figures, never written by hand.

``tinyllm export`` writes the same card as its folder's README.md. ``tinyllm
card`` describes a training checkpoint instead, and measures what a reader
needs: the validation loss of these very weights over the whole held-out
split, and samples generated from them.

The card text itself is plain Python (no Lightning); the ``card`` command
(``tinyllm.commands.card``) measures the loss with Lightning's
``Trainer.validate``, exactly as ``tinyllm validate`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyllm.core.checkpoint import best_checkpoint_state
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import Tokenizer
from tinyllm.files import fmt_bytes, sha256_of
from tinyllm.formats.hf_layout import WEIGHTS

TRAINING_HPARAMS = ("lr", "min_lr", "warmup_steps", "weight_decay", "betas")


@dataclass
class ExportFacts:
    """What an export folder's card states about the files written."""

    files: dict[str, int]
    weights_sha256: str
    hf_check: dict[str, Any] | None = None


@dataclass
class Measured:
    """Figures measured on these weights when the card was made."""

    val_loss: float
    val_tokens: int
    split: str  # which part of which text, in words
    samples: list[tuple[str, str]] = field(default_factory=list)  # (settings, prompt + generated text)


def _fmt_count(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"


def example_prompt(tokenizer: Tokenizer) -> str:
    if tokenizer.name != "char" or all(ch in tokenizer.chars for ch in "ROMEO:"):
        return "ROMEO:"
    return next((ch for ch in tokenizer.chars if ch.isalpha()), tokenizer.chars[0])


def _perplexity(loss: float) -> float:
    """e^loss, the effective number of equally likely next tokens (inf where it would overflow)."""
    return math.exp(loss) if loss < 50 else float("inf")


def model_card(
    name: str,
    model: GPT,
    tokenizer: Tokenizer,
    training: dict[str, Any],
    data: str | None = None,
    export: ExportFacts | None = None,
    measured: Measured | None = None,
) -> str:
    """The card, in Markdown: every figure comes from the checkpoint, the files written or ``measured``.

    With ``export`` it is an export folder's README.md, and ``name`` the folder
    (or Hub id) that its usage lines load; without, it describes the checkpoint
    ``name``.
    """
    c = model.config
    llama = c.is_llama_shaped
    n_params = model.num_parameters()
    prompt = example_prompt(tokenizer)
    tags = ["tinyllm", "text-generation", "llama" if llama else "custom-architecture",
            "character-level" if tokenizer.name == "char" else "gpt2-bpe"]  # fmt: skip
    front = ["---", *(["library_name: transformers"] if llama else []), "pipeline_tag: text-generation", "tags:",
             *[f"- {t}" for t in tags], "---", ""] if export else []  # fmt: skip  (Hub metadata: exports only)

    if llama:
        kind = "LLaMA-shaped (RMSNorm, SwiGLU, RoPE, no biases): a Hugging Face `LlamaForCausalLM`"
    else:
        kind = (f"tinyllm-only ({', '.join(c.llama_differences())}): **not** a Llama, and no Hugging Face architecture "
                "computes it; load it with tinyllm")  # fmt: skip
    mlp = {"swiglu": "SwiGLU", "gelu": "GELU", "relu": "ReLU"}[c.mlp]
    norm = {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm"}[c.norm]
    pos = f"RoPE, θ = {c.rope_theta:g}" if c.pos_emb == "rope" else "learned absolute embeddings"
    tied = "tied to the token embedding (counted once)" if c.tie_embeddings else "separate from the token embedding"

    step = training.get("step")
    loss = training.get("best_val_loss")
    if measured is not None:
        val = (f"**{measured.val_loss:.4f}** (perplexity {_perplexity(measured.val_loss):.2f}), measured on "
               f"these weights over the whole held-out split ({measured.split}, {measured.val_tokens:,} tokens) "
               "when this card was made (mean cross-entropy per token, in nats)")  # fmt: skip
    elif isinstance(loss, (int, float)):
        ppl = _perplexity(loss)
        if training.get("val_loss_is_these_weights"):
            val = f"**{loss:.4f}** (perplexity {ppl:.2f}), measured on these weights"
        else:
            val = (f"**{loss:.4f}** (perplexity {ppl:.2f}): the lowest the run had recorded when this checkpoint "
                   f"was written; these weights are from step {step} and may score differently")  # fmt: skip
        val += " (mean cross-entropy per token, in nats, on the held-out split of the training text)"
    else:
        val = "not recorded in the checkpoint (no validation had run when it was written)"
    hp = training.get("hyperparameters") or {}
    recipe = ", ".join(f"{k} {v}" for k, v in hp.items() if v is not None) or "not recorded"
    if data:
        data_line = data
    else:
        data_line = ("not recorded in the checkpoint. tinyllm trains on Tiny Shakespeare (about 1.1 M characters "
                     "of Shakespeare's plays, from Karpathy's char-rnn) unless `--data.path` names another text; "
                     f"`tinyllm {'export' if export else 'card'} --data \"…\"` states it here")  # fmt: skip

    if tokenizer.name == "char":
        shown = "".join(ch if ch.isprintable() and ch != " " else repr(ch)[1:-1] if ch != " " else "␣"
                        for ch in tokenizer.chars)  # fmt: skip
        tok = (f"Character-level: one token per character, {tokenizer.vocab_size} characters (ids in this order): "
               f"`{shown}`. Any other character in a prompt is an error.")
        if export:
            tok += (" `tokenizer.json` is a `tokenizers` WordLevel model over these characters with a pre-tokenizer "
                    "that isolates every character; `AutoTokenizer` loads it and gives the same ids as tinyllm, and "
                    "refuses other characters too.")  # fmt: skip
    else:
        tok = "GPT-2's byte-level BPE (50,257 ids; `<|endoftext|>` = 50256), through tiktoken's `r50k_base`."
        if export:
            tok += (" `tokenizer.json` was rebuilt from those ranks (50,000 merges); `AutoTokenizer` loads it and "
                    "gives the same ids as tiktoken. One difference: tinyllm treats `<|endoftext|>` typed in a "
                    "prompt as plain text, Hugging Face as the special token.")  # fmt: skip

    hf_check = export.hf_check if export else None
    if export is None:
        check = ("`python -m tinyllm export` turns this checkpoint into a safetensors folder"
                 + (" that transformers loads as a `LlamaForCausalLM`." if llama else "."))
    elif hf_check and "max_abs_logit_diff" in hf_check:
        check = (f"Checked at export: transformers {hf_check['transformers_version']} loads this folder as "
                 f"`{hf_check['architecture']}` and reproduces tinyllm's logits on {hf_check['tokens']} random "
                 f"tokens to within {hf_check['max_abs_logit_diff']:.2g} (float32); `AutoTokenizer` gives "
                 "tinyllm's ids.")  # fmt: skip
    elif hf_check:
        check = (f"Checked at export: transformers {hf_check['transformers_version']}'s `AutoTokenizer` gives "
                 "tinyllm's ids.")  # fmt: skip
    else:
        check = "Not checked against transformers at export (it was not installed)."

    source = training.get("source")
    lines = [
        *front,
        f"# {name}",
        "",
        f"A {n_params:,}-parameter decoder-only transformer trained from scratch with tinyllm on "
        f"{'characters' if tokenizer.name == 'char' else 'GPT-2 BPE tokens'}. "
        f"This card was generated by `tinyllm {'export' if export else 'card'}`"
        + (f" from the checkpoint `{source}` (sha256 `{training['source_sha256']}`)" if source else "")
        + (f"; it describes the weights in `{WEIGHTS}`, sha256 `{export.weights_sha256}`." if export else "."),
        "",
        "## Model",
        "",
        "| | |",
        "| --- | --- |",
        f"| architecture | {kind} |",
        f"| parameters | {n_params:,} |",
        f"| layers × heads × width | {c.n_layer} × {c.n_head} × {c.n_embd} (head dimension {c.head_dim}) |",
        f"| MLP | {mlp}, hidden width {c.hidden_dim} |",
        f"| norm | {norm}, ε = {c.norm_eps:g} |",
        f"| positions | {pos} |",
        f"| biases | {'yes' if c.bias else 'none'} |",
        f"| output head | {tied} |",
        f"| context | {c.block_size} tokens |",
        f"| vocabulary | {c.vocab_size:,} ({tokenizer.name}) |",
        f"| weights | float32, {'safetensors' if export else 'a Lightning checkpoint'} |",
        "",
        "## Training",
        "",
        "| | |",
        "| --- | --- |",
        f"| optimizer steps | {step if step is not None else 'not recorded'} |",
        f"| validation loss | {val} |",
        f"| optimizer | AdamW: {recipe} (warmup, then cosine decay to min_lr) |",
        f"| data | {data_line} |",
        f"| dropout in training | {c.dropout:g} |",
        "",
        "## Tokenizer",
        "",
        tok,
        "",
        "## Use",
        "",
        f"With tinyllm (`pip install -e .` in its repository), on this {'folder' if export else 'checkpoint'}:",
        "",
        "```bash",
        f'python -m tinyllm generate --ckpt_path {name} --prompt "{prompt}" --max_new_tokens 500',
        "```",
        "",
    ]
    if export is not None and llama:
        lines += [
            "With 🤗 transformers:",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
            f'model = AutoModelForCausalLM.from_pretrained("{name}")',
            f'ids = tokenizer("{prompt}", return_tensors="pt").input_ids',
            f"out = model.generate(ids, max_new_tokens={max(1, c.block_size - 16)}, do_sample=True, "
            "temperature=0.8, top_k=200)",
            "print(tokenizer.decode(out[0]))",
            "```",
            "",
            f"Keep prompt + new tokens within the {c.block_size}-token context: the model never saw positions beyond "
            "it (tinyllm's `generate` slides its window for you; transformers does not).",
            "",
        ]
    elif export is not None:
        lines += [
            "`transformers` cannot run these weights: `config.json` says `model_type: tinyllm`, and the tensors keep "
            "tinyllm's names. `AutoTokenizer` still loads the tokenizer from this folder.",
            "",
        ]
    lines += [check, ""]
    if measured is not None and measured.samples:
        lines += ["## Samples", "", "Generated from these weights when this card was made (tinyllm `generate`, "
                  "KV cache):", ""]  # fmt: skip
        for settings, text in measured.samples:
            lines += [f"**{settings}**", "", "```text", text, "```", ""]
    lines += [
        "## Intended use and limits",
        "",
        f"- For learning and experiments: how a small GPT trains, and what each architectural swap changes. "
        f"Its text imitates its training data; with {_fmt_count(n_params)} parameters it is often ungrammatical "
        "and never reliable.",
        "- Not for any use that needs facts, safety or fairness: there is no instruction tuning and no safety "
        "filtering, and it repeats whatever views its training text holds.",
        f"- It reads at most {c.block_size} tokens of context.",
    ]
    if tokenizer.name == "char":
        lines.append(f"- It can only read and write its {tokenizer.vocab_size} characters.")
    lines += [
        "- The validation loss is measured on text from the same source as the training text, so it says "
        "nothing about other kinds of text.",
        "",
    ]
    if export is None:
        return "\n".join(lines)
    lines += [
        "## Files",
        "",
        "| file | size |",
        "| --- | ---: |",
        *[f"| `{f}` | {fmt_bytes(size)} |" for f, size in export.files.items()],
        "",
        "The folder holds no pickled data: safetensors and JSON only. tinyllm loads it with "
        "`tinyllm.export.load_export` (or `--ckpt_path` on this folder) with the same logits as the checkpoint; "
        "`config.json` keeps tinyllm's own config under the `tinyllm` key.",
        "",
    ]
    return "\n".join(lines)


def training_info(p: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a Lightning checkpoint records about its training, as plain JSON values."""
    hparams = ckpt.get("hyper_parameters", {})
    info: dict[str, Any] = {
        "step": ckpt.get("global_step"),
        "source": p.name,
        "source_sha256": sha256_of(p),
        "hyperparameters": {k: _plain(hparams[k]) for k in TRAINING_HPARAMS if k in hparams},
    }
    best = best_checkpoint_state(ckpt)
    if best is not None:
        info["best_val_loss"] = float(best["best_model_score"])
        info["val_loss_is_these_weights"] = Path(str(best.get("best_model_path", ""))).name == p.name
    return info


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
