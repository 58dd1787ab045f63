"""Model cards, generated from a checkpoint and measured figures, never written by hand.

``tinyllm export`` writes the same card as its folder's README.md. ``tinyllm
card`` describes a training checkpoint instead, and measures what a reader
needs: the validation loss of these very weights over the whole held-out
split, and samples generated from them.

The card text itself is plain Python (no Lightning); ``tinyllm.training.evaluate``
measures the loss for ``card`` and ``export`` with Lightning's ``Trainer.validate``,
exactly as ``tinyllm validate`` does. An export's front matter is built with
huggingface_hub's ``ModelCardData``, so the Hub reads its license, dataset and
``model-index`` as it reads any card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyllm.core.checkpoint import BEST_VAL_LOSS, TRAINING_HPARAMS, best_checkpoint_state
from tinyllm.core.defaults import PROMPT, TEMPERATURE, TOP_K
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import EOT, MIN_BPE_VOCAB, Tokenizer
from tinyllm.files import fmt_bytes, sha256_of
from tinyllm.errors import TinyLLMError
from tinyllm.formats.hf_layout import HF_EXTRA, WEIGHTS

TINY_SHAKESPEARE_HUB = "karpathy/tiny_shakespeare"
LICENSE = "mit"  # the project's; the weights are trained from scratch on public-domain text


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
    corpus: str = "Tiny Shakespeare"  # the text's name
    hub_dataset: str | None = TINY_SHAKESPEARE_HUB  # its id on the Hugging Face Hub, where it has one


def _fmt_count(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"


def example_prompt(tokenizer: Tokenizer) -> str:
    if tokenizer.name != "char" or all(ch in tokenizer.chars for ch in PROMPT):
        return PROMPT
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
    ``name``. One function per section, top to bottom.
    """
    sections = [
        _front_matter(name, model, tokenizer, measured) if export else [],
        _title(name, model, tokenizer, training, export),
        _model_section(model, tokenizer, export),
        _training_section(model, training, data, export, measured),
        ["## Tokenizer", "", _tokenizer_text(tokenizer, export), ""],
        _use_section(name, model, tokenizer, export),
        [_check_line(model, export), ""],
        _samples_section(measured),
        _limits_section(model, tokenizer),
        _files_section(export) if export else [],
    ]
    return "\n".join(line for section in sections for line in section)


TOKENS_IN_WORDS = {"char": "characters", "gpt2": "GPT-2 BPE tokens"}  # else a bpe:N learned from the corpus


def _front_matter(name: str, model: GPT, tokenizer: Tokenizer, measured: Measured | None) -> list[str]:
    """Hub metadata (exports only), built with huggingface_hub's own ``ModelCardData``: license, language,
    dataset, tags, and a ``model-index`` with the val loss and perplexity when they were measured."""
    try:
        from huggingface_hub import EvalResult, ModelCardData
    except ImportError:
        raise TinyLLMError(f"export writes a Hub model card and needs huggingface_hub: {HF_EXTRA}") from None
    llama = model.config.is_llama_shaped
    tags = ["tinyllm", "text-generation", "llama" if llama else "custom-architecture",
            {"char": "character-level", "gpt2": "gpt2-bpe"}.get(tokenizer.name, "byte-level-bpe")]  # fmt: skip
    results = None
    if measured is not None:
        on = {"task_type": "text-generation", "dataset_type": measured.hub_dataset or "text",
              "dataset_name": measured.corpus, "dataset_split": measured.split}  # fmt: skip
        unit = "nats per character" if tokenizer.name == "char" else "nats per token"
        results = [
            EvalResult(**on, metric_type="loss", metric_value=round(measured.val_loss, 4),
                       metric_name=f"val loss ({unit}, {measured.split})"),
            EvalResult(**on, metric_type="perplexity", metric_value=round(_perplexity(measured.val_loss), 4),
                       metric_name="val perplexity"),
        ]  # fmt: skip
    data = ModelCardData(
        model_name=Path(name).name, license=LICENSE, language="en", library_name="transformers" if llama else None,
        pipeline_tag="text-generation", tags=tags, eval_results=results,
        datasets=[measured.hub_dataset] if measured is not None and measured.hub_dataset else None,
    )  # fmt: skip
    return ["---", data.to_yaml(), "---", ""]


def _title(
    name: str, model: GPT, tokenizer: Tokenizer, training: dict[str, Any], export: ExportFacts | None
) -> list[str]:
    source = training.get("source")
    return [
        f"# {name}",
        "",
        f"A {model.num_parameters():,}-parameter decoder-only transformer trained from scratch with tinyllm on "
        f"{TOKENS_IN_WORDS.get(tokenizer.name, 'the tokens of a byte-level BPE learned from its training text')}. "
        f"This card was generated by `tinyllm {'export' if export else 'card'}`"
        + (f" from the checkpoint `{source}` (sha256 `{training['source_sha256']}`)" if source else "")
        + (f"; it describes the weights in `{WEIGHTS}`, sha256 `{export.weights_sha256}`." if export else "."),
        "",
    ]


def _model_section(model: GPT, tokenizer: Tokenizer, export: ExportFacts | None) -> list[str]:
    c = model.config
    if c.is_llama_shaped:
        kind = "LLaMA-shaped (RMSNorm, SwiGLU, RoPE, no biases): a Hugging Face `LlamaForCausalLM`"
    else:
        kind = (f"tinyllm-only ({', '.join(c.llama_differences())}): **not** a Llama, and no Hugging Face architecture "
                "computes it; load it with tinyllm")  # fmt: skip
    mlp = {"swiglu": "SwiGLU", "gelu": "GELU", "relu": "ReLU", "relu2": "ReLU²"}[c.mlp]
    norm = {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm"}[c.norm]
    pos = f"RoPE, θ = {c.rope_theta:g}" if c.pos_emb == "rope" else "learned absolute embeddings"
    tied = "tied to the token embedding (counted once)" if c.tie_embeddings else "separate from the token embedding"
    return [
        "## Model",
        "",
        "| | |",
        "| --- | --- |",
        f"| architecture | {kind} |",
        f"| parameters | {model.num_parameters():,} |",
        f"| layers × heads × width | {c.n_layer} × {c.n_head} × {c.n_embd} (head dimension {c.head_dim}) |",
        f"| MLP | {mlp}, hidden width {c.hidden_dim} |",
        f"| norm | {norm}, ε = {c.norm_eps:g} |",
        f"| positions | {pos} |",
        f"| biases | {'yes' if c.bias else 'none'} |",
        f"| output head | {tied} |",
        *([f"| also | {', '.join(extras)} |"] if (extras := c.extra_switches()) else []),
        f"| context | {c.block_size} tokens |",
        f"| vocabulary | {c.vocab_size:,} ({tokenizer.name}) |",
        f"| weights | float32, {'safetensors' if export else 'a Lightning checkpoint'} |",
        "",
    ]


def _val_loss_text(training: dict[str, Any], measured: Measured | None) -> str:
    step, loss = training.get("step"), training.get(BEST_VAL_LOSS)
    if measured is not None:
        return (f"**{measured.val_loss:.4f}** (perplexity {_perplexity(measured.val_loss):.2f}), measured on "
                f"these weights over the whole held-out split ({measured.split}, {measured.val_tokens:,} tokens) "
                "when this card was made (mean cross-entropy per token, in nats)")  # fmt: skip
    if not isinstance(loss, (int, float)):
        return "not recorded in the checkpoint (no validation had run when it was written)"
    ppl = _perplexity(loss)
    if training.get("val_loss_is_these_weights"):
        val = f"**{loss:.4f}** (perplexity {ppl:.2f}), measured on these weights"
    else:
        val = (f"**{loss:.4f}** (perplexity {ppl:.2f}): the lowest the run had recorded when this checkpoint "
               f"was written; these weights are from step {step} and may score differently")  # fmt: skip
    return val + " (mean cross-entropy per token, in nats, on the held-out split of the training text)"


def _training_section(model: GPT, training: dict[str, Any], data: str | None, export: ExportFacts | None,
                      measured: Measured | None) -> list[str]:  # fmt: skip
    step = training.get("step")
    hp = training.get("hyperparameters") or {}
    recipe = ", ".join(f"{k} {v}" for k, v in hp.items() if v is not None) or "not recorded"
    data_line = data or (
        "not recorded in the checkpoint. tinyllm trains on Tiny Shakespeare (about 1.1 M characters "
        "of Shakespeare's plays, from Karpathy's char-rnn) unless `--data.path` names another text; "
        f"`tinyllm {'export' if export else 'card'} --data \"…\"` states it here"
    )
    return [
        "## Training",
        "",
        "| | |",
        "| --- | --- |",
        f"| optimizer steps | {step if step is not None else 'not recorded'} |",
        f"| validation loss | {_val_loss_text(training, measured)} |",
        f"| optimizer | {_optimizer_text(training)}: {recipe} |",
        f"| data | {data_line} |",
        f"| dropout in training | {model.config.dropout:g} |",
        "",
    ]


def _optimizer_text(training: dict[str, Any]) -> str:
    hp = training.get("hyperparameters", {})
    optimizer = "Muon (block matrices) + AdamW (embeddings, gains)" if hp.get("optimizer") == "muon" else "AdamW"
    schedule = ("warmup, constant, then a linear decay to min_lr" if hp.get("schedule") == "wsd"
                else "warmup, then cosine decay to min_lr")  # fmt: skip
    return f"{optimizer}, {schedule}"


def _tokenizer_text(tokenizer: Tokenizer, export: ExportFacts | None) -> str:
    if tokenizer.name == "char":
        shown = "".join(ch if ch.isprintable() and ch != " " else repr(ch)[1:-1] if ch != " " else "␣"
                        for ch in tokenizer.chars)  # fmt: skip
        tok = (f"Character-level: one token per character, {tokenizer.vocab_size} characters (ids in this order): "
               f"`{shown}`. Any other character in a prompt is an error.")
        if export:
            tok += (" `tokenizer.json` is a `tokenizers` WordLevel model over these characters with a pre-tokenizer "
                    "that isolates every character; `AutoTokenizer` loads it and gives the same ids as tinyllm, and "
                    "refuses other characters too.")  # fmt: skip
        return tok
    if tokenizer.name == "bpe":
        tok = (f"A byte-level BPE of {tokenizer.vocab_size:,} ids trained on the training text with Hugging Face "
               f"`tokenizers` (`{EOT}` = {tokenizer.eot_id}, between documents).")
        if export:
            tok += " `tokenizer.json` is that tokenizer; `AutoTokenizer` loads it and gives the same ids as tinyllm."
        return tok
    tok = (f"GPT-2's byte-level BPE ({tokenizer.vocab_size:,} ids; `{EOT}` = {tokenizer.eot_id}), through "
           "tiktoken's `r50k_base`.")
    if export:
        merges = tokenizer.vocab_size - MIN_BPE_VOCAB  # every id but the bytes and the special token
        tok += (f" `tokenizer.json` was rebuilt from those ranks ({merges:,} merges); `AutoTokenizer` loads it and "
                f"gives the same ids as tiktoken. One difference: tinyllm treats `{EOT}` typed in a "
                "prompt as plain text, Hugging Face as the special token.")  # fmt: skip
    return tok


def _use_section(name: str, model: GPT, tokenizer: Tokenizer, export: ExportFacts | None) -> list[str]:
    c, prompt = model.config, example_prompt(tokenizer)
    lines = [
        "## Use",
        "",
        f"With tinyllm (`pip install -e .` in its repository), on this {'folder' if export else 'checkpoint'}:",
        "",
        "```bash",
        f'python -m tinyllm generate --ckpt_path {name} --prompt "{prompt}" --max_new_tokens 500',
        "```",
        "",
    ]
    if export is not None and c.is_llama_shaped:
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
            f"temperature={TEMPERATURE}, top_k={TOP_K})",
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
    return lines


def _check_line(model: GPT, export: ExportFacts | None) -> str:
    hf_check = export.hf_check if export else None
    if export is None:
        return ("`python -m tinyllm export` turns this checkpoint into a safetensors folder"
                + (" that transformers loads as a `LlamaForCausalLM`." if model.config.is_llama_shaped else "."))
    if hf_check and "max_abs_logit_diff" in hf_check:
        return (f"Checked at export: transformers {hf_check['transformers_version']} loads this folder as "
                f"`{hf_check['architecture']}` and reproduces tinyllm's logits on {hf_check['tokens']} random "
                f"tokens to within {hf_check['max_abs_logit_diff']:.2g} (float32); `AutoTokenizer` gives "
                "tinyllm's ids.")  # fmt: skip
    if hf_check:
        return (f"Checked at export: transformers {hf_check['transformers_version']}'s `AutoTokenizer` gives "
                "tinyllm's ids.")  # fmt: skip
    return "Not checked against transformers at export (it was not installed)."


def _samples_section(measured: Measured | None) -> list[str]:
    if measured is None or not measured.samples:
        return []
    lines = ["## Samples", "",
             "Generated from these weights when this card was made (tinyllm `generate`, KV cache):", ""]
    for settings, text in measured.samples:
        lines += [f"**{settings}**", "", "```text", text, "```", ""]
    return lines


def _limits_section(model: GPT, tokenizer: Tokenizer) -> list[str]:
    lines = [
        "## Intended use and limits",
        "",
        f"- For learning and experiments: how a small GPT trains, and what each architectural swap changes. "
        f"Its text imitates its training data; with {_fmt_count(model.num_parameters())} parameters it is often "
        "ungrammatical and never reliable.",
        "- Not for any use that needs facts, safety or fairness: there is no instruction tuning and no safety "
        "filtering, and it repeats whatever views its training text holds.",
        f"- It reads at most {model.config.block_size} tokens of context.",
    ]
    if tokenizer.name == "char":
        lines.append(f"- It can only read and write its {tokenizer.vocab_size} characters.")
    return lines + [
        "- The validation loss is measured on text from the same source as the training text, so it says "
        "nothing about other kinds of text.",
        "",
    ]


def _files_section(export: ExportFacts) -> list[str]:
    return [
        "## Files",
        "",
        "| file | size |",
        "| --- | ---: |",
        *[f"| `{f}` | {fmt_bytes(size)} |" for f, size in export.files.items()],
        "",
        "The folder holds no pickled data: safetensors and JSON only. tinyllm loads it with "
        "`tinyllm.formats.load.load_model` (or `--ckpt_path` on this folder) with the same logits as the "
        "checkpoint; `config.json` keeps tinyllm's own config under the `tinyllm` key.",
        "",
    ]


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
        info[BEST_VAL_LOSS] = float(best["best_model_score"])
        info["val_loss_is_these_weights"] = Path(str(best.get("best_model_path", ""))).name == p.name
    return info


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
