"""AutoTokenizer loads our tokenizer files and gives tinyllm's ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyllm.formats.folder import load_export

VARIED_TEXT = [
    "ROMEO:\nBut soft, what light through yonder window breaks?",
    "  two  spaces,\n\n\nthree newlines,\ttabs\t\tand trailing spaces   ",
    "It's we'll they're I'd you've 1604 3.14159 -- 'quoted' \"double\"",
    "naïve café, Ünïcödé, 東京, emoji 😀👍🏽, zero\u200bwidth, ÿ",
    "x = {'a': [1, 2]}  # code-ish!!! ???",
]


def test_autotokenizer_matches_tiktoken_for_bpe(exports, data_dir: Path):
    from transformers import AutoTokenizer

    ours = load_export(exports["bpe"]).tokenizer
    theirs = AutoTokenizer.from_pretrained(exports["bpe"])
    shakespeare = (data_dir / "input.txt").read_text()[:20000]
    for text in [*VARIED_TEXT, shakespeare, "", " ", "\n\n"]:
        ids = ours.encode(text)
        assert theirs(text)["input_ids"] == ids, repr(text[:60])
        assert theirs.decode(ids) == text
    assert theirs.eos_token_id == 50256 and theirs.convert_ids_to_tokens(50256) == "<|endoftext|>"


def test_autotokenizer_matches_char_tokenizer(exports, data_dir: Path):
    from transformers import AutoTokenizer

    ours = load_export(exports["char"]).tokenizer
    theirs = AutoTokenizer.from_pretrained(exports["char"])
    shakespeare = (data_dir / "input.txt").read_text()[:20000]
    for text in [VARIED_TEXT[0], "  two  spaces,\n\n\nthree newlines, trailing   ", shakespeare, " ", "\n", ours.chars]:
        ids = ours.encode(text)
        assert theirs(text)["input_ids"] == ids, repr(text[:60])
        assert theirs.decode(ids) == text
    assert theirs("".join(ours.chars))["input_ids"] == list(range(65))
    with pytest.raises(Exception):  # like tinyllm, an unknown character is an error, never a wrong id
        theirs("café")["input_ids"]
    # The vanilla model's folder is not a Llama, but its tokenizer still loads.
    assert AutoTokenizer.from_pretrained(exports["vanilla"])("ROMEO:")["input_ids"] == ours.encode("ROMEO:")
