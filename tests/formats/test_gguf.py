"""GGUF export: read back with llama.cpp's own reader (``gguf``) and, when installed, run by llama.cpp itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.cli import assert_one_line_error, describe, run_main
from tests.helpers.models import TINY
from tinyllm.core.config import GPTConfig
from tinyllm.core.generate import generate_tokens
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import CharTokenizer
from tinyllm.errors import TinyLLMError
from tinyllm.formats.gguf_file import interleave_rope_rows, write_gguf
from tinyllm.formats.load import load_model

gguf = pytest.importorskip("gguf")


def export_gguf(ckpt: Path, out: Path, *extra: str) -> Path:
    proc = run_main("export", "--ckpt_path", ckpt, "--out_dir", out, "--format", "gguf", *extra, cwd=out.parent)
    assert proc.returncode == 0, describe(proc)
    return out / "model.gguf"


def fields(reader) -> dict:
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        value = field.contents()
        out[name] = value
    return out


def greedy(model: GPT, ids: list[int], n: int) -> list[int]:
    prompt = torch.tensor([ids])
    return [int(t) for t in generate_tokens(model.eval(), prompt, n, temperature=0.0)]


def test_rope_rows_interleave_per_head():
    w = torch.arange(8).float()[:, None]  # 2 heads of head_dim 4: rows (0 1 | 2 3), (4 5 | 6 7)
    assert interleave_rope_rows(w, n_head=2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bpe", "char"])
def test_gguf_holds_the_weights_tokenizer_and_shape_llama_cpp_reads(runs, tmp_path: Path, name: str):
    path = export_gguf(runs[name], tmp_path / "out")
    loaded = load_model(runs[name])
    model, tokenizer, c = loaded.model, loaded.tokenizer, loaded.model.config
    reader = gguf.GGUFReader(path)
    meta = fields(reader)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == c.n_layer and meta["llama.embedding_length"] == c.n_embd
    assert meta["llama.attention.head_count"] == meta["llama.attention.head_count_kv"] == c.n_head
    assert meta["llama.context_length"] == c.block_size and meta["llama.feed_forward_length"] == c.hidden_dim
    assert meta["llama.rope.freq_base"] == pytest.approx(c.rope_theta)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.add_bos_token"] is False
    tokens = meta["tokenizer.ggml.tokens"]
    if name == "bpe":
        assert len(tokens) == c.vocab_size
        assert len(meta["tokenizer.ggml.merges"]) == 50_000 and tokens[50256] == "<|endoftext|>"
        assert meta["tokenizer.ggml.eos_token_id"] == 50256
        assert tokens[tokenizer.encode(" the")[0]] == "Ġthe"  # byte-level: the space is Ġ
    else:  # each character its byte-level token, then an end-of-text token llama.cpp stops at
        assert tokens[tokenizer.encode("\n")[0]] == "Ċ" and tokens[tokenizer.encode("A")[0]] == "A"
        assert len(tokens) == c.vocab_size + 1 and tokens[-1] == "<|endoftext|>"
        assert meta["tokenizer.ggml.eos_token_id"] == c.vocab_size

    tensors = {t.name: torch.from_numpy(np.array(t.data)) for t in reader.tensors}
    state = model.state_dict()
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    embedding = tensors["token_embd.weight"]
    assert torch.equal(embedding[: c.vocab_size], state["embed_tokens.weight"])
    assert embedding.shape[0] == len(tokens) and not embedding[c.vocab_size :].any()
    assert torch.equal(tensors["blk.1.ffn_down.weight"], state["layers.1.mlp.down_proj.weight"])
    q = state["layers.0.self_attn.q_proj.weight"]
    assert torch.equal(tensors["blk.0.attn_q.weight"], interleave_rope_rows(q, c.n_head))
    assert len(tensors) == 2 + 9 * c.n_layer


def test_gguf_f16_halves_the_matrices_and_keeps_norms_f32(runs, tmp_path: Path):
    path = export_gguf(runs["char"], tmp_path / "out", "--dtype", "f16")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == gguf.GGMLQuantizationType.F32


def test_gguf_refuses_what_llama_cpp_cannot_run(runs, tmp_path: Path):
    assert_one_line_error(run_main("export", "--ckpt_path", runs["vanilla"], "--out_dir", tmp_path / "v",
                                   "--format", "gguf", cwd=tmp_path), "LLaMA-shaped", "--format hf")  # fmt: skip
    assert not (tmp_path / "v").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "model.gguf").write_text("my notes")
    assert_one_line_error(run_main("export", "--ckpt_path", runs["char"], "--out_dir", tmp_path / "taken",
                                   "--format", "gguf", cwd=tmp_path), "not a GGUF")  # fmt: skip
    assert (tmp_path / "taken" / "model.gguf").read_text() == "my notes"
    (tmp_path / "notes").mkdir()  # the user's files, or another model's export: no GGUF goes beside them
    (tmp_path / "notes" / "notes.txt").write_text("keep me")
    assert_one_line_error(run_main("export", "--ckpt_path", runs["char"], "--out_dir", tmp_path / "notes",
                                   "--format", "gguf", cwd=tmp_path), "holds other files (notes.txt)")  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["notes.txt"]
    model = GPT(GPTConfig(**{**TINY, "vocab_size": 3}))
    with pytest.raises(TinyLLMError, match="several bytes"):
        write_gguf(model, CharTokenizer("abé"), tmp_path / "wide.gguf", "wide")
    assert not (tmp_path / "wide.gguf").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bpe", "char"])
def test_llama_cpp_continues_the_prompt_exactly_as_tinyllm(runs, tmp_path: Path, name: str):
    """llama.cpp itself (llama-cpp-python, built from source) loads the file and decodes greedily."""
    llama_cpp = pytest.importorskip("llama_cpp")
    path = export_gguf(runs[name], tmp_path / "out")
    loaded = load_model(runs[name])
    ids = loaded.tokenizer.encode("ROMEO:\nBut soft, what light")
    n = loaded.model.config.block_size - len(ids)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=loaded.model.config.block_size, n_threads=1, verbose=False,
                          logits_all=True, type_k=0, type_v=0)  # float32 keys and values (GGML_TYPE_F32), as ours
    assert llm.tokenize("ROMEO:\nBut soft, what light".encode(), add_bos=False) == ids
    theirs = []
    llm.eval(ids)
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))  # greedy: llama.cpp's logits for the last position
        theirs.append(token)
        llm.eval([token])
    assert theirs == greedy(loaded.model, ids, n)


# ----------------------------------------------------------------------------- a BPE trained on the corpus (bpe:N)

BPE_TEXTS = [
    "ROMEO:\nBut soft, what light through yonder window breaks?",
    "  two  spaces,\n\n\nthree newlines,\ttabs\t\tand trailing spaces   ",
    "It's we'll they're I'd 1604 3.14159 -- 'quoted' \"double\"",
    "naïve café, Ünïcödé, 東京 ☃, emoji 😀👍🏽, déjà vu",
    "  \r\n \u00a0 \u2003 \u200b",
    "<|endoftext|> typed in a prompt is just characters",
]


def test_gguf_holds_a_trained_bpe_as_llama_cpp_gpt2_tokenizer(tmp_path: Path):
    import json

    from tests.helpers.bpe import bpe_checkpoint, bpe_model, small_bpe

    tok = small_bpe()
    model = bpe_model(tok, pad_to=320)  # a model vocabulary larger than the tokenizer's: unused rows
    loaded = load_model(bpe_checkpoint(tmp_path / "run" / "last.ckpt", model, tok))  # as export --format gguf does
    path = write_gguf(loaded.model, loaded.tokenizer, tmp_path / "out" / "model.gguf", "tiny-bpe")
    reader = gguf.GGUFReader(path)
    meta = fields(reader)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.ggml.eos_token_id"] == meta["tokenizer.ggml.bos_token_id"] == tok.eot_id
    doc = json.loads(tok.to_json())
    vocab = {i: t for t, i in doc["model"]["vocab"].items()}
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 320
    assert tokens[: tok.vocab_size] == [vocab[i] for i in range(tok.vocab_size)]
    assert tokens[tok.eot_id] == "<|endoftext|>" and types[tok.eot_id] == gguf.TokenType.CONTROL
    assert {types[i] for i in range(tok.vocab_size) if i != tok.eot_id} == {gguf.TokenType.NORMAL}
    assert set(types[tok.vocab_size :]) == {gguf.TokenType.UNUSED}
    assert meta["tokenizer.ggml.merges"] == [f"{a} {b}" for a, b in doc["model"]["merges"]]
    assert tokens[tok.encode(" t")[0]] == "Ġt"  # byte-level: the space is Ġ
    embedding = torch.from_numpy(np.array(next(t.data for t in reader.tensors if t.name == "token_embd.weight")))
    assert torch.equal(embedding, model.state_dict()["embed_tokens.weight"])


def test_llama_cpp_tokenizes_and_continues_a_trained_bpe_exactly_as_tinyllm(tmp_path: Path):
    """llama.cpp itself (llama-cpp-python, built from source) reads our BPE: the same ids, the same greedy text."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from tests.helpers.bpe import bpe_model, shakespeare_head, small_bpe

    tok = small_bpe()
    model = bpe_model(tok, block_size=64)
    path = write_gguf(model, tok, tmp_path / "model.gguf", "tiny-bpe")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=1, verbose=False, logits_all=True,
                          type_k=0, type_v=0)  # float32 keys and values (GGML_TYPE_F32), as ours  # fmt: skip
    for text in [*BPE_TEXTS, shakespeare_head(20_000)]:
        assert llm.tokenize(text.encode(), add_bos=False) == tok.encode(text), repr(text)
    ids = tok.encode(BPE_TEXTS[0])
    n = 64 - len(ids)
    theirs = []
    llm.eval(ids)
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        theirs.append(token)
        llm.eval([token])
    ours = greedy(model, ids, n)
    assert theirs == ours
    assert llm.detokenize([t for t in ours if t != tok.eot_id]).decode("utf-8", "replace") == tok.decode(
        [t for t in ours if t != tok.eot_id]
    )
