"""tinyllm.core.defaults: every sampler starts from the same settings, so generate can redo a card's sample."""

from __future__ import annotations

import inspect

import pytest

from tinyllm.commands.generate import generate
from tinyllm.core.defaults import PROMPT, SEED, TEMPERATURE, TOP_K
from tinyllm.training.callbacks import GenerationSamples


@pytest.mark.parametrize("sampler", [generate, GenerationSamples.__init__], ids=["generate", "samples"])
def test_every_sampler_defaults_to_the_shared_settings(sampler):
    p = inspect.signature(sampler).parameters
    assert (p["prompt"].default, p["temperature"].default, p["top_k"].default, p["seed"].default) == (
        PROMPT, TEMPERATURE, TOP_K, SEED)  # fmt: skip


def test_cards_and_exports_prompt_with_the_default_where_the_vocabulary_allows():
    from tinyllm.core.tokenizers import CharTokenizer
    from tinyllm.formats.card import example_prompt

    assert example_prompt(CharTokenizer.from_text("ROMEO: and JULIET")) == PROMPT
    assert example_prompt(CharTokenizer.from_text("abc")) == "a"  # the default prompt's letters are missing
