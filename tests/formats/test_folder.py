"""Exported folders: exact round trip, Hugging Face names, refusals (tinyllm.formats.folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import LLAMA_RUNS, RUNS
from tests.helpers.models import logits, some_ids
from tinyllm.errors import TinyLLMError
from tinyllm.formats.hf_layout import ExportSection
from tinyllm.formats.load import export
from tinyllm.formats.load import load_model


@pytest.mark.parametrize("name", list(RUNS))
def test_export_round_trip_is_exact(runs, exports, name):
    ckpt, folder = load_model(runs[name]), load_model(exports[name])
    assert folder.path == exports[name] and folder.step == ckpt.step == 4
    assert folder.metrics == ckpt.metrics and "best_val_loss" in folder.metrics
    assert folder.model.config == ckpt.model.config
    assert folder.tokenizer.state() == ckpt.tokenizer.state()
    ids = some_ids(ckpt.model.config.vocab_size)
    assert torch.equal(logits(ckpt.model, ids), logits(folder.model, ids))
    # Also through the weights file's path.
    assert torch.equal(logits(load_model(exports[name] / "model.safetensors").model, ids), logits(ckpt.model, ids))


@pytest.mark.parametrize("name", LLAMA_RUNS)
def test_llama_shaped_exports_use_hugging_face_names(exports, name):
    from safetensors import safe_open

    cfg = json.loads((exports[name] / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    arch = cfg["tinyllm"]["arch"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]) == (32, 2, 2)
    assert cfg["num_key_value_heads"] == cfg["num_attention_heads"]
    assert cfg["max_position_embeddings"] == arch["block_size"] == 32
    assert cfg["vocab_size"] == arch["vocab_size"] == (50257 if name == "bpe" else 65)
    assert cfg["tie_word_embeddings"] is True and cfg["attention_bias"] is False and cfg["mlp_bias"] is False
    assert cfg["eos_token_id"] == (50256 if name == "bpe" else None)
    expected = {"model.embed_tokens.weight", "model.norm.weight"}  # tied: no lm_head.weight
    for i in range(2):
        expected |= {f"model.layers.{i}.self_attn.{p}_proj.weight" for p in "qkvo"}
        expected |= {f"model.layers.{i}.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
        expected |= {f"model.layers.{i}.input_layernorm.weight", f"model.layers.{i}.post_attention_layernorm.weight"}
    with safe_open(exports[name] / "model.safetensors", framework="pt") as f:
        assert set(f.keys()) == expected
        assert f.metadata() == {"format": "pt"}


def test_vanilla_exports_and_round_trips_but_claims_no_llama(exports):
    from safetensors import safe_open

    folder = exports["vanilla"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "tinyllm" and "architectures" not in cfg
    assert list(cfg["tinyllm"]) == list(ExportSection.__annotations__)  # the section is the schema, field by field
    assert "LlamaForCausalLM" not in (folder / "config.json").read_text()
    assert cfg["tinyllm"]["weights_layout"] == "tinyllm"
    with safe_open(folder / "model.safetensors", framework="pt") as f:
        keys = set(f.keys())
    assert {"embed_positions.weight", "layers.0.input_norm.bias", "layers.1.mlp.up_proj.bias", "lm_head.weight"} <= keys
    assert not any(k.startswith("model.") for k in keys)
    card = (folder / "README.md").read_text()
    assert "**not** a Llama" in card and "layernorm instead of RMSNorm" in card
    assert "library_name: transformers" not in card


def test_export_refuses_to_overwrite_other_files_and_reexports_in_place(runs, exports, tmp_path: Path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("keep me")
    with pytest.raises(TinyLLMError, match="not empty and not an export"):
        export(runs["char"], tmp_path / "busy", verify=False)
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "keep me"
    (tmp_path / "hub").mkdir()  # another model's folder: the same two file names, no tinyllm section
    (tmp_path / "hub" / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "hub" / "model.safetensors").write_bytes(b"theirs")
    with pytest.raises(TinyLLMError, match="not empty and not an export"):
        export(runs["char"], tmp_path / "hub", verify=False)
    assert (tmp_path / "hub" / "model.safetensors").read_bytes() == b"theirs"
    # Re-exporting an export (into a new folder, then over itself) keeps the training record and the bytes.
    again = export(exports["char"], tmp_path / "again", verify=False)
    assert (again / "model.safetensors").read_bytes() == (exports["char"] / "model.safetensors").read_bytes()
    export(again, again, verify=False)
    assert load_model(again).metrics == load_model(runs["char"]).metrics


def test_an_export_that_fails_at_its_last_rename_leaves_the_earlier_export_whole(runs, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    out = export(runs["char"], tmp_path / "out", verify=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(src).endswith(".tmp"):  # the new folder's rename into place: the disk goes away here
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr("tinyllm.formats.folder.os.replace", failing_replace)
    with pytest.raises(OSError):
        export(runs["char"], out, verify=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing set aside or half-built left


def test_folders_that_are_not_exports_are_refused_in_one_line(exports, tmp_path: Path):
    import shutil

    folder = tmp_path / "plain-hf"
    shutil.copytree(exports["char"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["tinyllm"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TinyLLMError, match="no 'tinyllm' section") as err:
        load_model(folder)
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TinyLLMError, match="nor an exported model"):
        load_model(tmp_path / "empty")


def _edited_export(exports, tmp_path: Path, edit) -> Path:
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(exports["char"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg["tinyllm"])
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize(("edit", "words"), [
    (lambda s: s["tokenizer"].pop("chars"), "no characters"),
    (lambda s: s.update(tokenizer="char"), "tokenizer in its tinyllm section"),
    (lambda s: s.update(training=[1]), "training record"),
    (lambda s: s.update(training=0), "training record"),
    (lambda s: s.update(files=3), "'files'"),
])  # fmt: skip
def test_an_edited_export_config_is_one_line(exports, tmp_path: Path, edit, words: str):
    folder = _edited_export(exports, tmp_path, edit)
    with pytest.raises(TinyLLMError, match=words) as err:
        load_model(folder)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("edit", [lambda s: s.update(tokenizer="char"), lambda s: s.update(training=[1])])
def test_publish_refuses_what_loading_refuses(exports, tmp_path: Path, edit):
    """publish checks a folder with check_export: it must not upload a folder that no tinyllm can load."""
    from tinyllm.formats.folder import check_export

    with pytest.raises(TinyLLMError, match="tinyllm section") as err:
        check_export(_edited_export(exports, tmp_path, edit))
    assert "\n" not in str(err.value)


def test_an_export_without_a_training_record_loads_with_an_empty_one(exports, tmp_path: Path):
    folder = _edited_export(exports, tmp_path, lambda s: s.update(training=None))
    assert load_model(folder).training == {}


def test_a_card_that_is_not_utf8_is_checked_as_bytes(exports, tmp_path: Path):
    import shutil

    from tinyllm.formats.folder import check_export

    folder = tmp_path / "latin1"
    shutil.copytree(exports["char"], folder)
    card = folder / "README.md"
    card.write_bytes(card.read_bytes() + "\ncafé\n".encode("latin-1"))  # still names the weights' sha256
    check_export(folder)
    card.write_bytes("café".encode("latin-1"))
    with pytest.raises(TinyLLMError, match="does not describe these weights"):
        check_export(folder)
