"""What the pictures show must be true of the model: tinyllm.core.insides."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.models import TINY, sharp_model
from tinyllm.core.config import GPTConfig
from tinyllm.core.insides import (
    attention_maps, cache_cost, kv_cache_bytes, logit_lens, recording_attention, rope_scores, trained_query_keys,
)  # fmt: skip
from tinyllm.core.model import GPT, RotaryEmbedding

IDS = [1, 5, 2, 7, 7, 3, 9, 0, 4, 4, 8, 6]


def test_attention_rows_are_distributions_over_the_past_only():
    maps = attention_maps(sharp_model("modern"), IDS)
    assert maps.shape == (TINY["n_layer"], TINY["n_head"], len(IDS), len(IDS))
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
    future = torch.ones(len(IDS), len(IDS), dtype=torch.bool).triu(1)
    assert (maps[..., future] == 0).all() and (maps[..., ~future] > 0).all()


def test_recorded_attention_is_the_layers_softmax_and_recording_changes_no_output():
    sdpa = sharp_model("modern", attention="sdpa")
    x = torch.tensor([IDS])
    # Layer 0's weights computed here from the formula, independently of the model's attention code.
    with torch.no_grad():
        attn = sdpa.layers[0].self_attn
        h = sdpa.layers[0].input_norm(sdpa.embed_tokens(x))
        q, k = (proj(h).view(1, len(IDS), attn.n_head, attn.head_dim).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj))
        cos, sin = sdpa.rope.angles(torch.arange(len(IDS)))
        q, k = RotaryEmbedding.rotate(q, cos, sin), RotaryEmbedding.rotate(k, cos, sin)
        scores = (q @ k.transpose(-2, -1)) / attn.head_dim**0.5
        future = torch.ones(len(IDS), len(IDS), dtype=torch.bool).triu(1)
        expected = scores.masked_fill(future, float("-inf")).softmax(-1)[0]
    torch.testing.assert_close(attention_maps(sdpa, IDS)[0], expected, atol=1e-6, rtol=0)

    # The manual kernel gives the same picture as SDPA.
    manual = GPT(GPTConfig(**{**sdpa.config.to_dict(), "attention": "manual"})).eval()
    manual.load_state_dict(sdpa.state_dict())
    torch.testing.assert_close(attention_maps(manual, IDS), attention_maps(sdpa, IDS), atol=1e-6, rtol=0)

    # Recording sends SDPA through the formula: the output stays the fused kernel's.
    with torch.no_grad():
        plain = sdpa(x)
        with recording_attention(sdpa) as records:
            recorded = sdpa(x)
            assert all(r.weights is not None and r.weights.shape == (1, 2, len(IDS), len(IDS)) for r in records)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=0)
    layers = [block.self_attn for block in sdpa.layers]
    assert all(m.kernel == "sdpa" and not m.scores._forward_hooks for m in layers)  # off again: kernel back, no hooks


def test_logit_lens_at_the_last_layer_is_the_models_own_prediction():
    model = sharp_model("modern")
    lens = logit_lens(model, IDS)
    with torch.no_grad():
        own = model(torch.tensor([IDS]))[0].softmax(-1)
    assert lens.probs.shape == (TINY["n_layer"], len(IDS), TINY["vocab_size"])
    torch.testing.assert_close(lens.probs[-1], own)
    expected = own[:-1].gather(-1, torch.tensor(IDS[1:])[:, None])[:, 0]
    torch.testing.assert_close(lens.true_next[-1], expected)
    assert not torch.allclose(lens.probs[0], lens.probs[-1])  # earlier layers do predict something else


def test_rope_score_depends_on_distance_only():
    rope = RotaryEmbedding(head_dim=16, max_positions=256, base=10000.0)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 16, generator=gen), torch.randn(5, 16, generator=gen)
    at_0, at_37, at_100 = (rope_scores(rope, q, k, 64, start=s) for s in (0, 37, 100))
    torch.testing.assert_close(at_37, at_0, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(at_100, at_0, atol=1e-4, rtol=1e-5)
    assert torch.allclose(at_0[:, 0], (q * k).sum(-1), atol=1e-5)  # distance 0: the plain dot product
    assert not torch.allclose(at_0[:, 0], at_0[:, 5])  # and it does change with distance


def test_trained_queries_and_keys_are_the_layers_projections():
    model = sharp_model("modern")
    q, k = trained_query_keys(model, IDS)
    assert q.shape == k.shape == (len(IDS) * TINY["n_head"], TINY["n_embd"] // TINY["n_head"])


def test_cache_cost_counts_keys_and_values_of_every_layer():
    model = sharp_model("modern")
    assert kv_cache_bytes(model, 10) == 2 * TINY["n_layer"] * 10 * TINY["n_embd"] * 4
    cost = cache_cost(model, IDS[:2], new_tokens=5, repeats=1)
    assert cost.tokens == [1, 2, 3, 4, 5] and len(cost.seconds_cached) == len(cost.seconds_recomputed) == 5
    assert cost.cache_bytes == [kv_cache_bytes(model, 2 + n) for n in cost.tokens]



def test_cache_cost_times_one_new_token_with_the_cache_and_the_whole_prefix_without(monkeypatch: pytest.MonkeyPatch):
    # A fake clock that advances by the tokens the model is fed: each "second" is one token through the model.
    model, clock = sharp_model("modern"), [0.0]
    model.register_forward_pre_hook(lambda module, args: clock.__setitem__(0, clock[0] + args[0].size(1)))
    monkeypatch.setattr("tinyllm.core.insides.time.perf_counter", lambda: clock[0])
    cost = cache_cost(model, IDS[:2], new_tokens=5, repeats=2)
    assert cost.seconds_cached == [2, 1, 1, 1, 1]  # the 2-token prefill, then one token per step
    assert cost.seconds_recomputed == [2, 3, 4, 5, 6]  # the whole prefix, every step


def test_looking_inside_a_compiled_model_runs_it_eagerly():
    graphs = []
    model = GPT(GPTConfig(**TINY))
    model.compile(backend=lambda gm, example_inputs: graphs.append(gm) or gm.forward)
    torch._dynamo.reset()
    attention_maps(model, IDS)  # under evaluating(): eager, as a sample during training is
    assert graphs == []
    with torch.no_grad():
        model(torch.tensor([IDS]))
    torch._dynamo.reset()
    assert len(graphs) == 1  # outside it, the same call compiles
