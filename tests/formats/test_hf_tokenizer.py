"""AutoTokenizer loads our tokenizer files and gives tinyllm's ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyllm.formats.load import load_model

VARIED_TEXT = [
    "ROMEO:\nBut soft, what light through yonder window breaks?",
    "  two  spaces,\n\n\nthree newlines,\ttabs\t\tand trailing spaces   ",
    "It's we'll they're I'd you've 1604 3.14159 -- 'quoted' \"double\"",
    "naïve café, Ünïcödé, 東京, emoji 😀👍🏽, zero\u200bwidth, ÿ",
    "x = {'a': [1, 2]}  # code-ish!!! ???",
]


def test_autotokenizer_matches_tiktoken_for_bpe(exports, data_dir: Path):
    from transformers import AutoTokenizer

    ours = load_model(exports["bpe"]).tokenizer
    theirs = AutoTokenizer.from_pretrained(exports["bpe"])
    shakespeare = (data_dir / "input.txt").read_text()[:20000]
    for text in [*VARIED_TEXT, shakespeare, "", " ", "\n\n"]:
        ids = ours.encode(text)
        assert theirs(text)["input_ids"] == ids, repr(text[:60])
        assert theirs.decode(ids) == text
    assert theirs.eos_token_id == 50256 and theirs.convert_ids_to_tokens(50256) == "<|endoftext|>"


def test_autotokenizer_matches_char_tokenizer(exports, data_dir: Path):
    from transformers import AutoTokenizer

    ours = load_model(exports["char"]).tokenizer
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


# ----------------------------------------------------------------------------- a BPE trained on the corpus (bpe:N)


def test_bpe_export_loads_with_autotokenizer_and_back_into_tinyllm(tmp_path: Path, data_dir: Path):
    import json

    import torch
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import AutoTokenizer

    from tests.helpers.bpe import bpe_checkpoint, bpe_model, small_bpe
    from tinyllm.core.tokenizers import EOT, BPETokenizer
    from tinyllm.formats.folder import write_export
    from tinyllm.formats.load import load_model

    tok = small_bpe()
    model = bpe_model(tok)
    from_ckpt = load_model(bpe_checkpoint(tmp_path / "run" / "last.ckpt", model, tok))  # a checkpoint holds it too
    assert isinstance(from_ckpt.tokenizer, BPETokenizer) and from_ckpt.tokenizer.state() == tok.state()
    # verify=False: the transformers parity check is tested with the trained runs; here only the tokenizer counts
    out = write_export(from_ckpt.model, from_ckpt.tokenizer, tmp_path / "tiny-bpe", verify=False)

    assert HFTokenizer.from_file(str(out / "tokenizer.json")).to_str() == tok.to_json()  # ours, unchanged
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == EOT and tok_cfg["added_tokens_decoder"][str(tok.eot_id)]["special"] is True
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["bos_token_id"] == cfg["eos_token_id"] == tok.eot_id
    assert cfg["vocab_size"] == tok.vocab_size and cfg["tinyllm"]["tokenizer"] == tok.state()

    theirs = AutoTokenizer.from_pretrained(out)
    shakespeare = (data_dir / "input.txt").read_text()[:20000]
    for text in [*VARIED_TEXT, shakespeare, "", " ", "\n\n"]:
        ids = tok.encode(text)
        assert theirs(text)["input_ids"] == ids, repr(text[:60])
        assert theirs.decode(ids) == text
    assert theirs.eos_token_id == tok.eot_id and theirs.convert_ids_to_tokens(tok.eot_id) == EOT
    assert len(theirs) == tok.vocab_size

    loaded = load_model(out)
    assert isinstance(loaded.tokenizer, BPETokenizer) and loaded.tokenizer.state() == tok.state()
    ids = torch.tensor([tok.encode("ROMEO: naïve 東京")])
    with torch.inference_mode():
        assert torch.equal(loaded.model(ids), model(ids))
