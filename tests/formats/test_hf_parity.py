"""transformers runs our Llama exports: its logits equal tinyllm's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import LLAMA_RUNS
from tests.helpers.models import logits, recipe_arch, some_ids
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import CharTokenizer
from tinyllm.formats.folder import write_export
from tinyllm.formats.load import load_model


@pytest.mark.parametrize("name", LLAMA_RUNS)
def test_transformers_llama_logits_match_ours(exports, name):
    from transformers import AutoTokenizer, LlamaForCausalLM

    ours = load_model(exports[name]).model
    theirs = LlamaForCausalLM.from_pretrained(exports[name], attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(exports[name])
    text_ids = tok("ROMEO:\nBut soft, what light through yonder window breaks?", return_tensors="pt").input_ids[:, :32]
    assert text_ids.size(1) >= 12
    for ids in (text_ids, some_ids(ours.config.vocab_size, length=32)):  # real text, and the full context
        with torch.inference_mode():
            diff = (logits(ours, ids) - theirs(ids).logits).abs().max().item()
        assert diff <= 1e-4, f"{name}: max |Δlogit| {diff:.3g} over {ids.shape}"
    # Greedy decoding with Hugging Face's own KV cache gives tinyllm's tokens.
    from tinyllm.core.generate import generate

    prompt = text_ids[:, :8]
    with torch.inference_mode():
        hf_out = theirs.generate(prompt, max_new_tokens=16, do_sample=False, pad_token_id=0)[0, 8:].tolist()
    assert generate(ours, prompt[0].tolist(), 16, temperature=0).tokens[0] == hf_out


def test_untied_llama_with_other_rope_theta_and_eps_matches_transformers(tmp_path: Path):
    """Settings no training run uses: an untied head, θ = 500000, ε = 1e-6, 4 heads, a custom MLP width.

    Measured: max |Δlogit| ~1e-6 at |logits| ~5; permuting q/k rows to interleaved pairs gives ~6.
    """
    from transformers import LlamaForCausalLM

    config = recipe_arch("modern", n_layer=2, n_head=4, n_embd=32, block_size=24, vocab_size=65, dropout=0.0,
                              tie_embeddings=False, rope_theta=500000.0, norm_eps=1e-6, mlp_hidden=80)  # fmt: skip
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():  # norm gains that differ (a mix-up of the norms would show), and weights 10x
        for name, p in model.named_parameters():  # the init, so attention is peaked and logits are O(5)
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.mul_(10)
    tokenizer = CharTokenizer("".join(chr(32 + i) for i in range(65)))
    folder = write_export(model, tokenizer, tmp_path / "untied", verify=False)
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", framework="pt") as f:
        assert "lm_head.weight" in f.keys()
    ids = some_ids(65, length=24)
    assert torch.equal(logits(load_model(folder).model, ids), logits(model, ids))
    theirs = LlamaForCausalLM.from_pretrained(folder).eval()
    rope = getattr(theirs.config, "rope_parameters", None) or {"rope_theta": theirs.config.rope_theta}
    assert rope["rope_theta"] == 500000.0 and theirs.config.rms_norm_eps == 1e-6
    with torch.inference_mode():
        diff = (logits(model, ids) - theirs(ids).logits).abs().max().item()
    assert diff <= 1e-4, f"max |Δlogit| {diff:.3g}"
    # The test can tell RoPE layouts apart: with q/k rows in Meta's interleaved-pair order
    # (what a wrong export would ship), transformers computes a different model.
    d = config.head_dim
    interleaved = torch.arange(d).view(2, d // 2).t().reshape(-1)  # 0, D/2, 1, D/2+1, ...
    rows = torch.cat([h * d + interleaved for h in range(config.n_head)])
    with torch.no_grad():
        for layer in theirs.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight.copy_(proj.weight[rows])
        wrong = (logits(model, ids) - theirs(ids).logits).abs().max().item()
    assert wrong > 0.1, f"permuted q/k rows went unnoticed ({wrong:.3g})"
