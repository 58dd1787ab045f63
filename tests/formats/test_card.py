"""Model cards generated from the checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import LLAMA_RUNS, RUNS
from tests.helpers.names import missing_names
from tinyllm.formats.load import export
from tinyllm.formats.load import load_model


@pytest.mark.parametrize("name", list(RUNS))
def test_model_card_is_generated_from_the_checkpoint(runs, exports, name):
    from tinyllm.files import sha256_of

    loaded = load_model(runs[name])
    card = (exports[name] / "README.md").read_text()
    assert f"{loaded.model.num_parameters():,}" in card
    assert f"{loaded.metrics['best_val_loss']:.4f}" in card and "measured on these weights" in card
    assert "| optimizer steps | 4 |" in card
    assert sha256_of(exports[name] / "model.safetensors") in card and sha256_of(runs[name]) in card
    assert "## Intended use and limits" in card and "| context | 32 tokens |" in card
    assert missing_names(card) == []  # the functions it tells a reader to call exist
    if name in LLAMA_RUNS:
        assert "`LlamaForCausalLM`" in card and "Checked at export: transformers" in card
    assert ("GPT-2's byte-level BPE" in card) == (name == "bpe")
    if name == "bpe":  # GPT-2's own figures, whatever the tokenizer's attributes are called
        assert "(50,257 ids; `<|endoftext|>` = 50256)" in card and "(50,000 merges)" in card
    assert ("trained from scratch with tinyllm on GPT-2 BPE tokens" in card) == (loaded.tokenizer.name == "gpt2")
    if name == "next_era":  # every switch named, and not passed off as a Llama
        assert "| MLP | ReLU²" in card and "**not** a Llama" in card
        assert "| also | QK-norm, zero-initialised output projections, value embeddings, residual/x0 scalars, " \
               "logits soft-capped at 15 |" in card


def test_model_card_usage_lines_load_the_published_name(runs, tmp_path: Path):
    card = (export(runs["char"], tmp_path / "card", verify=False, repo_id="someone/tiny-shakespeare") / "README.md")
    text = card.read_text()
    assert 'from_pretrained("someone/tiny-shakespeare")' in text
    assert "--ckpt_path someone/tiny-shakespeare" in text
    local = export(runs["char"], tmp_path / "local", verify=False) / "README.md"
    assert f'from_pretrained("{tmp_path / "local"}")' in local.read_text()


def test_export_card_front_matter_is_read_by_huggingface_hub(runs, tmp_path: Path):
    """The Hub's own parser reads the license, dataset, and a model-index with the val loss measured at export."""
    import math
    import re

    from huggingface_hub import ModelCard

    from tests.helpers.cli import describe, run_main

    proc = run_main("export", "--ckpt_path", runs["char"], "--out_dir", tmp_path / "out", "--verify", "false",
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    measured = float(re.search(r"measured now: val loss ([0-9.]+)", proc.stdout).group(1))
    card = ModelCard.load(tmp_path / "out" / "README.md")
    data = card.data
    assert data.license == "mit" and data.language == "en" and data.datasets == ["karpathy/tiny_shakespeare"]
    assert data.pipeline_tag == "text-generation" and "tinyllm" in data.tags and data.library_name == "transformers"
    results = {r.metric_type: r for r in data.eval_results}
    assert set(results) == {"loss", "perplexity"}
    assert results["loss"].metric_value == pytest.approx(measured, abs=1e-4)
    assert results["perplexity"].metric_value == pytest.approx(math.exp(measured), rel=1e-3)
    assert results["loss"].dataset_name == "Tiny Shakespeare"
    assert results["loss"].dataset_split == "the last 10% of Tiny Shakespeare"  # what was measured, in words
    assert f"**{measured:.4f}**" in card.text  # the body states the same figure


@pytest.mark.parametrize(("spec", "words"), [("char", "on characters."), ("bpe:260", "on the tokens of a byte-level "
                                             "BPE learned from its training text.")])  # fmt: skip
def test_the_cards_first_line_names_the_kind_of_token(spec: str, words: str):
    from types import SimpleNamespace

    from tinyllm.core.tokenizers import build_tokenizer
    from tinyllm.formats.card import _title

    tokenizer = build_tokenizer(spec, "to be, or not to be: that is the question. " * 40)
    title = _title("tiny", SimpleNamespace(num_parameters=lambda: 1000), tokenizer, {}, None)
    assert words in title[2], title[2]
