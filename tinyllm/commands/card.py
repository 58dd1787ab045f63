"""``python -m tinyllm card``: a model card for a checkpoint, with its val loss and samples measured now."""

from __future__ import annotations


from tinyllm.core.defaults import SEED, VAL_FRACTION
from tinyllm.errors import TinyLLMError
from tinyllm.files import check_writable_folder, user_path
from tinyllm.formats.card import example_prompt, model_card
from tinyllm.formats.folder import export_dir_of
from tinyllm.formats.load import load_model
from tinyllm.training.evaluate import measure


def card(
    ckpt_path: str,
    out: str = "MODEL_CARD.md",
    samples: int = 2,
    max_new_tokens: int = 300,
    prompt: str | None = None,
    seed: int = SEED,
    data: str | None = None,
    data_path: str | None = None,
    data_dir: str | None = None,
    val_fraction: float = VAL_FRACTION,
) -> None:
    """Write a model card for a checkpoint, with its val loss over the whole held-out split and samples, measured now.

    Args:
        ckpt_path: a .ckpt file, or a run folder holding last.ckpt.
        out: the Markdown file to write.
        samples: generated samples shown on the card.
        max_new_tokens: tokens per sample.
        prompt: the samples' prompt (default: tinyllm's usual prompt where the vocabulary allows).
        seed: sample i is drawn with seed + i.
        data: a line describing the training data.
        data_path: the text it was trained on, if not Tiny Shakespeare.
        data_dir: input.txt's folder ($TINYLLM_DATA_DIR).
        val_fraction: as --data.val_fraction in training.
    """
    if samples < 0 or max_new_tokens < 1:
        raise TinyLLMError("--samples must be 0 or more and --max_new_tokens at least 1")
    if export_dir_of(ckpt_path) is not None:
        raise TinyLLMError(f"{ckpt_path} is an exported folder: its README.md is its card (card reads .ckpt files)")
    where = user_path(out)
    if where.suffix.lower() != ".md" or where.is_dir():  # a typo must not replace a checkpoint with Markdown
        raise TinyLLMError(f"--out {out} is not a Markdown file: give a path ending in .md, e.g. MODEL_CARD.md")
    check_writable_folder(where.parent, "--out")  # before the evaluation, which takes a while
    loaded = load_model(ckpt_path, "cpu", data_dir)
    prompt = prompt if prompt is not None else example_prompt(loaded.tokenizer)
    if not loaded.tokenizer.encode(prompt):  # also refuses unknown characters, before the long evaluation
        raise TinyLLMError("the prompt is empty: give --prompt some text")
    measured = measure(loaded.model, loaded.tokenizer, data_path, data_dir, val_fraction, prompt,
                       samples, max_new_tokens, seed)  # fmt: skip
    text = model_card(ckpt_path, loaded.model, loaded.tokenizer, loaded.training, data, measured=measured)
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text(text, encoding="utf-8")
    print(f"wrote {where}: val loss {measured.val_loss:.4f} over {measured.val_tokens:,} tokens, "
          f"{len(measured.samples)} samples")
