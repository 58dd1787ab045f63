"""Tests for tinyllm.core.model (CPU, tiny configs, fast)."""

from __future__ import annotations

import itertools
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers.models import NEW_ERA_NAMES, PRESET_NAMES, TINY, recipe_arch, torch_threads
from tinyllm.core import kernels
from tinyllm.core.config import GPTConfig
from tinyllm.core.kernels import embedding_backward
from tinyllm.core.model import GPT, Dropout, Embedding, LayerNorm, RMSNorm, RotaryEmbedding
from tinyllm.errors import TinyLLMError


def tiny_config(**overrides) -> GPTConfig:
    return GPTConfig(**{**TINY, **overrides})


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_config(**overrides)).eval()


def random_tokens(b: int, t: int, vocab: int = TINY["vocab_size"], seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, t), generator=g)


def test_modern_parameter_count():
    assert GPT(recipe_arch("modern")).num_parameters() == 10_646_784


def test_vanilla_parameter_count():
    cfg = recipe_arch("vanilla")
    n = GPT(cfg).num_parameters()
    assert n == 10_770_816
    # The original project had no q/k/v biases: 10,763,904. Ours adds exactly those, 3·C per layer.
    model = GPT(cfg)
    qkv_bias = sum(p.numel() for name, p in model.named_parameters() if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")))
    assert qkv_bias == cfg.n_layer * 3 * cfg.n_embd
    assert n - qkv_bias == 10_763_904


def test_vanilla_has_bias_everywhere_and_modern_nowhere():
    vanilla = GPT(tiny_config(norm="layernorm", mlp="relu", pos_emb="learned", bias=True))
    for name, module in vanilla.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":  # the head is tied to the embedding
            assert module.bias is not None, name
        if isinstance(module, LayerNorm):
            assert module.bias is not None, name
    modern = GPT(tiny_config(norm="rmsnorm", mlp="swiglu", pos_emb="rope", bias=False))
    assert not any(name.endswith("bias") for name, _ in modern.named_parameters())


def test_swiglu_hidden_width():
    assert GPTConfig(n_embd=384, mlp="swiglu").hidden_dim == 1024
    assert recipe_arch("modern").hidden_dim == 1024
    assert GPTConfig(n_embd=384, mlp="relu").hidden_dim == 4 * 384
    assert GPTConfig(n_embd=384, mlp="gelu").hidden_dim == 4 * 384
    assert GPTConfig(n_embd=384, mlp="swiglu", mlp_hidden=100).hidden_dim == 100


COMBOS = list(
    itertools.product(("layernorm", "rmsnorm"), ("relu", "gelu", "swiglu"), ("learned", "rope"), ("manual", "sdpa"))
)


@pytest.mark.parametrize("norm,mlp,pos_emb,attention", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_causality(norm, mlp, pos_emb, attention):
    model = tiny_model(norm=norm, mlp=mlp, pos_emb=pos_emb, attention=attention)
    T = TINY["block_size"]
    x = random_tokens(2, T)
    with torch.no_grad():
        base = model(x)
        assert base.shape == (2, T, TINY["vocab_size"])
        for t in (0, 1, 5, 9, T - 1):
            y = x.clone()
            y[:, t] = (y[:, t] + 1 + torch.arange(2)) % TINY["vocab_size"]  # a different token per row
            out = model(y)
            if t > 0:
                torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-6, rtol=0)
            # the changed token must change the prediction at its own position
            change = (out[:, t] - base[:, t]).abs().amax(dim=-1)
            assert (change > 1e-4).all(), f"t={t}: logits at t barely changed ({change.tolist()})"
            # and it propagates forwards
            if t < T - 1:
                assert (out[:, t + 1 :] - base[:, t + 1 :]).abs().max() > 1e-5


def test_tables_derived_from_the_config_stay_out_of_checkpoints():
    """The causal mask and RoPE's tables are made from the config, so checkpoints hold none of them."""
    model = tiny_model(pos_emb="rope")
    assert model.mask.shape == (TINY["block_size"], TINY["block_size"]) and model.rope.cos.numel() > 0
    assert not {"mask", "rope.cos", "rope.sin"} & set(model.state_dict())


def _chunked_logits(model: GPT, x: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    cache = model.new_cache(x.size(0))
    outs, start = [], 0
    for n in chunks:
        outs.append(model(x[:, start : start + n], cache))
        start += n
        assert cache.length == start
    assert start == x.size(1)
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("preset", PRESET_NAMES + NEW_ERA_NAMES)
def test_manual_equals_sdpa(preset):
    cfg_manual = recipe_arch(preset, **TINY, attention="manual")
    cfg_sdpa = recipe_arch(preset, **TINY, attention="sdpa")
    torch.manual_seed(0)
    manual = GPT(cfg_manual).eval()
    sdpa = GPT(cfg_sdpa).eval()
    # different random init until the weights are copied
    x = random_tokens(3, TINY["block_size"])
    with torch.no_grad():
        assert (manual(x) - sdpa(x)).abs().max() > 1e-3
        sdpa.load_state_dict(manual.state_dict())
        a, b = manual(x), sdpa(x)
        assert (a - b).abs().max() <= 1e-5
        chunks = [5, 1, 3, 1, 1, 4, 1]  # prefill, single-token and multi-token decode steps
        ca, cb = _chunked_logits(manual, x, chunks), _chunked_logits(sdpa, x, chunks)
        assert (ca - cb).abs().max() <= 1e-5
        assert (ca - a).abs().max() <= 1e-5


def test_rope_scores_depend_only_on_distance():
    D = 16
    rope = RotaryEmbedding(D, max_positions=64, base=10000.0)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 1, D, generator=g)
    k = torch.randn(1, 1, 1, D, generator=g)

    def score(pq: int, pk: int) -> torch.Tensor:
        qr = RotaryEmbedding.rotate(q, *rope.angles(torch.tensor([pq])))
        kr = RotaryEmbedding.rotate(k, *rope.angles(torch.tensor([pk])))
        return (qr * kr).sum()

    by_distance = {}
    for d in (0, 1, 3, 7):
        scores = torch.stack([score(p, p + d) for p in (0, 1, 5, 17, 40)])
        torch.testing.assert_close(scores, scores[0].expand_as(scores), atol=1e-5, rtol=0)
        by_distance[d] = scores[0]
    # position 0 is the identity rotation
    torch.testing.assert_close(RotaryEmbedding.rotate(q, *rope.angles(torch.tensor([0]))), q)
    # different distances give different scores
    vals = list(by_distance.values())
    for i, j in itertools.combinations(range(len(vals)), 2):
        assert (vals[i] - vals[j]).abs() > 1e-3


def test_rope_preserves_norm_and_matches_formula():
    D = 8
    rope = RotaryEmbedding(D, max_positions=32, base=10000.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 10, D, generator=g)
    positions = torch.arange(5, 15)
    y = RotaryEmbedding.rotate(x, *rope.angles(positions))
    assert y.shape == x.shape
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
    assert (y - x).abs().max() > 1e-2  # it does rotate
    # explicit split-halves formula
    half = D // 2
    theta = 10000.0 ** (-torch.arange(half, dtype=torch.float64) * 2 / D)
    ang = positions.double()[:, None] * theta[None, :]  # (T, D/2)
    x1, x2 = x.double()[..., :half], x.double()[..., half:]
    ref = torch.cat([x1 * ang.cos() - x2 * ang.sin(), x2 * ang.cos() + x1 * ang.sin()], dim=-1)
    torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
@pytest.mark.parametrize("preset", PRESET_NAMES + NEW_ERA_NAMES)
def test_kv_cache_matches_full_forward(preset, attention):
    torch.manual_seed(0)
    model = GPT(recipe_arch(preset, **TINY, attention=attention)).eval()
    x = random_tokens(2, TINY["block_size"])
    with torch.no_grad():
        full = model(x)
        for chunks in ([4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 16, [7, 2, 1, 6], [16]):
            cached = _chunked_logits(model, x, chunks)
            assert (cached - full).abs().max() <= 1e-5, chunks


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_kv_cache_length_and_overflow(preset):
    torch.manual_seed(0)
    model = GPT(recipe_arch(preset, **TINY)).eval()
    T = TINY["block_size"]
    x = random_tokens(1, T + 1)
    with torch.no_grad():
        cache = model.new_cache(1)
        assert cache.length == 0
        model(x[:, :10], cache)
        assert cache.length == 10
        model(x[:, 10:11], cache)
        assert cache.length == 11
        with pytest.raises(TinyLLMError, match="exceed"):
            model(x[:, 11:17], cache)  # 11 + 6 > 16
        assert cache.length == 11  # the failed call stored nothing
        model(x[:, 11:16], cache)
        assert cache.length == T
        with pytest.raises(TinyLLMError):
            model(x[:, 16:17], cache)
        assert cache.length == T
        # without a cache, over-long input is refused too
        with pytest.raises(TinyLLMError):
            model(x)
        # reset makes the cache reusable and reproduces the first prefill
        cache.reset()
        assert cache.length == 0
        torch.testing.assert_close(model(x[:, :T], cache), model(x[:, :T]), atol=1e-5, rtol=0)


INIT_CFG = dict(n_layer=4, n_head=4, n_embd=256, block_size=16, vocab_size=11, dropout=0.0)


@pytest.mark.parametrize("mlp,bias", [("relu", True), ("swiglu", False), ("gelu", True)])
def test_init_std_and_biases(mlp, bias):
    torch.manual_seed(0)
    cfg = GPTConfig(**INIT_CFG, mlp=mlp, bias=bias, norm="layernorm" if bias else "rmsnorm")
    model = GPT(cfg)
    residual_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    n_residual = n_other = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if name == "lm_head":
                continue  # tied to the embedding (vocab 11: too few entries for a tight estimate)
            w = module.weight.detach()
            expected = residual_std if name.endswith(("o_proj", "down_proj")) else 0.02
            if name.endswith(("o_proj", "down_proj")):
                n_residual += 1
            else:
                n_other += 1
            assert w.std().item() == pytest.approx(expected, rel=0.05), name
            assert abs(w.mean().item()) < 0.1 * expected, name
            if bias:
                assert module.bias is not None and torch.all(module.bias == 0), name
            else:
                assert module.bias is None, name
        elif isinstance(module, (LayerNorm, RMSNorm)):
            assert torch.all(module.weight == 1), name
            if getattr(module, "bias", None) is not None:
                assert torch.all(module.bias == 0), name
    assert n_residual == 2 * cfg.n_layer
    assert n_other == cfg.n_layer * (4 + (mlp == "swiglu"))  # q, k, v, up (+ gate) per layer
    emb = model.embed_tokens.weight.detach()
    assert emb.std().item() == pytest.approx(0.02, rel=0.2)
    if model.embed_positions is not None:
        assert model.embed_positions.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_tied_embeddings_share_storage():
    model = tiny_model(tie_embeddings=True)
    assert model.lm_head.weight is model.embed_tokens.weight
    assert model.lm_head.weight.data_ptr() == model.embed_tokens.weight.data_ptr()
    untied = tiny_model(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.embed_tokens.weight
    assert untied.lm_head.weight.data_ptr() != untied.embed_tokens.weight.data_ptr()
    # the tied matrix is counted once
    c = TINY["vocab_size"] * TINY["n_embd"]
    assert untied.num_parameters() - model.num_parameters() == c
    # updating one changes the other only when tied
    with torch.no_grad():
        model.embed_tokens.weight[0, 0] += 1.0
        untied.embed_tokens.weight[0, 0] += 1.0
    assert model.lm_head.weight[0, 0] == model.embed_tokens.weight[0, 0]
    assert untied.lm_head.weight[0, 0] != untied.embed_tokens.weight[0, 0]


def test_tied_embeddings_survive_state_dict_round_trip():
    a, b = tiny_model(seed=0), tiny_model(seed=1)
    b.load_state_dict(a.state_dict())
    assert b.lm_head.weight is b.embed_tokens.weight
    x = random_tokens(1, 8)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


TEXT = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!"


def test_overfits_one_batch():
    torch.manual_seed(0)
    chars = sorted(set(TEXT))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in TEXT])
    block = 32
    cfg = recipe_arch(
        "modern", n_layer=2, n_head=2, n_embd=64, block_size=block, vocab_size=len(chars), dropout=0.0
    )
    model = GPT(cfg)
    starts = torch.tensor([0, 17, 34, 51])
    x = torch.stack([data[s : s + block] for s in starts])
    y = torch.stack([data[s + 1 : s + block + 1] for s in starts])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()

    def loss_fn() -> torch.Tensor:
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

    initial = loss_fn().item()
    assert initial == pytest.approx(math.log(len(chars)), rel=0.1)  # small init: near-uniform
    for _ in range(150):
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = loss_fn().item()
    assert final < 0.3 * math.log(len(chars)), f"loss {initial:.3f} -> {final:.3f}"


def test_layernorm_matches_torch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, 32, generator=g) * 3 + 1
    ln = LayerNorm(32, eps=1e-5, bias=True)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(32, generator=g))
        ln.bias.copy_(torch.randn(32, generator=g))
    ref = F.layer_norm(x, (32,), ln.weight, ln.bias, eps=1e-5)
    torch.testing.assert_close(ln(x), ref, atol=1e-5, rtol=1e-5)
    ln_nobias = LayerNorm(32, eps=1e-3, bias=False)
    assert ln_nobias.bias is None
    with torch.no_grad():
        ln_nobias.weight.copy_(ln.weight)
    ref = F.layer_norm(x, (32,), ln.weight, None, eps=1e-3)
    torch.testing.assert_close(ln_nobias(x), ref, atol=1e-5, rtol=1e-5)


def test_rmsnorm_matches_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, 32, generator=g) * 3 + 1
    norm = RMSNorm(32, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(32, generator=g))
    xd, wd = x.double(), norm.weight.detach().double()
    ref = xd / torch.sqrt((xd**2).mean(dim=-1, keepdim=True) + 1e-5) * wd
    out = norm(x)
    assert out.dtype == x.dtype
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    # RMSNorm does not centre: unlike LayerNorm, the mean of the output is not 0
    plain = RMSNorm(32, eps=1e-5)(x)
    assert plain.mean(dim=-1).abs().max() > 0.1
    # eps matters for tiny inputs
    small = torch.full((1, 32), 1e-4)
    torch.testing.assert_close(
        RMSNorm(32, eps=1e-5)(small), small / math.sqrt(1e-8 + 1e-5), atol=1e-6, rtol=1e-5
    )


def test_rmsnorm_half_precision_does_not_overflow():
    # values ~300 square to ~9e4 > float16 max (65504): the sum of squares must be taken in float32
    x = (torch.randn(2, 5, 32) * 300).half()
    norm = RMSNorm(32, eps=1e-5).half()
    out = norm(x)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    xd = x.double()
    ref = xd / torch.sqrt((xd**2).mean(dim=-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(out.double(), ref, atol=1e-2, rtol=1e-2)


# ----------------------------------------------------------------------------- the model's maths: FLOPs, optimizer groups


def test_flops_per_token_counts_matmuls_and_attention():
    for preset in ("modern", "vanilla"):
        cfg = recipe_arch(preset)
        model = GPT(cfg)
        # By hand: each parameter costs 2 FLOPs forward and 4 backward (PaLM and nanoGPT count them all;
        # norm gains are a rounding error), and attention's QKᵀ and att·V cost 2·T·C each per layer, forward.
        n = sum(p.numel() for name, p in model.named_parameters() if name != "embed_positions.weight")
        attention = 2 * 2 * cfg.n_layer * cfg.block_size * cfg.n_embd
        assert model.flops_per_token() == 3 * (2 * n + attention)
        assert 6 * n < model.flops_per_token() < 6 * n * 1.2  # the matmuls dominate at this size
    # The learned position table is a lookup, not a matmul: it is left out.
    modern, vanilla = GPT(recipe_arch("modern")), GPT(recipe_arch("vanilla"))
    assert vanilla.embed_positions is not None and modern.embed_positions is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_zeroes_a_share_p_and_scales_the_rest(dtype):
    torch.manual_seed(0)
    # 100,001 rows of 8: column i is cut from the same byte of every 64-bit draw.
    drop, x = Dropout(0.3).train(), torch.randn(100_001, 8, dtype=dtype).add_(5).requires_grad_()
    y = drop(x)
    assert y.dtype == dtype
    kept = y != 0
    p = 77 / 256  # 0.3 rounded to a multiple of 2⁻⁸; the kept elements are scaled by 1 / (1 - p), so E[y] = x
    # Every one of the eight masks cut from a draw drops its own share p (a biased byte or lane would not).
    for lane in range(8):
        assert abs(1 - kept[:, lane].float().mean().item() - p) < 0.006
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    y.sum().backward()  # the gradient flows through the kept elements only, scaled alike
    torch.testing.assert_close(x.grad, kept.to(dtype) / (1 - p))
    assert drop.eval()(x) is x and Dropout(0.0).train()(x) is x


def test_dropout_rounds_p_to_a_multiple_of_one_256th():
    """At 1 - 2⁻¹⁰ that is 1, past every byte; at 2⁻¹⁰ it is 0, and every element is kept."""
    x = torch.ones(5, 8, requires_grad=True)
    assert Dropout(1 - 2**-10).train()(x).count_nonzero() == 0
    torch.manual_seed(0)
    assert Dropout(1 - 2**-8).train()(torch.ones(2**16)).count_nonzero() > 0  # 1 in 256 kept: 256 expected
    assert torch.equal(Dropout(2**-10).train()(x), x)


def test_dropout_masks_come_from_torchs_seeded_generator():
    """A resumed run restores torch's generator and must draw the very same masks."""
    drop, x = Dropout(0.5).train(), torch.ones(3, 7)
    torch.manual_seed(1)
    first, second = drop(x), drop(x)
    torch.manual_seed(1)
    assert torch.equal(drop(x), first) and not torch.equal(first, second)


def test_compiled_dropouts_draw_the_eager_masks_each_its_own_and_their_backward_reuses_them():
    """Compiled, each mask still comes from torch's generator (not Inductor's own draws), drawn once per forward:
    two dropouts of one input are two masks, not one expression the compiler may compute once."""

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = Dropout(0.3), Dropout(0.3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.first(x), self.second(x)

    two, x = Two().train(), torch.ones(17, 33, requires_grad=True)  # 561 elements: not whole 64-bit words
    torch.manual_seed(2)
    eager = two(x)
    torch.manual_seed(2)
    a, b = torch.compile(two, fullgraph=True)(x)
    assert not torch.equal(a, b)
    assert {y.detach().numpy().tobytes() for y in (a, b)} == {y.detach().numpy().tobytes() for y in eager}
    (a + 2 * b).sum().backward()  # a mask drawn again for the backward would zero other elements than the forward
    assert torch.equal(x.grad, ((a != 0).float() + 2 * (b != 0).float()) * (256 / 179))  # 1 / (1 - 77/256)


def test_a_compiled_model_in_training_draws_the_eager_masks_in_the_eager_order():
    """Each draw waits for the tensor its mask is for, so a compiled step draws the masks in the model's order."""
    model, x = tiny_model(dropout=0.3).train(), random_tokens(2, 16)
    torch.manual_seed(4)
    eager = model(x)
    torch.manual_seed(4)
    compiled = torch.compile(model)(x)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)


def test_building_a_model_first_runs_one_op_over_every_cpu_thread_once_per_thread_count(monkeypatch):
    """The threads' first op is a throwaway one on the CPU, split over all of them, before RoPE's table
    (kernels.py), even when the first model is built on "meta" (as reading an export's shapes does)."""
    calls: list[tuple[int, str]] = []
    real_cos, inside = torch.Tensor.cos, []

    def cos(t: torch.Tensor) -> torch.Tensor:  # a device context calls the method again from within: count it once
        if not inside:
            calls.append((t.numel(), t.device.type))
        inside.append(t)
        try:
            return real_cos(t)
        finally:
            inside.pop()

    monkeypatch.setattr(torch.Tensor, "cos", cos)
    monkeypatch.setattr(kernels, "_threads_warmed", (0, 0))
    with torch_threads(3):  # the test runner's workers take one thread each
        with torch.device("meta"):
            tiny_model(pos_emb="rope")
        tiny_model(pos_emb="rope")
        tiny_model(pos_emb="rope")  # the same process and thread count: nothing more to warm
    table = TINY["block_size"] * TINY["n_embd"] // TINY["n_head"] // 2  # RoPE's (T, D/2) angles
    grain = 32_768  # at::internal::GRAIN_SIZE: no op's grain is larger, so 3 × this is split over 3 threads
    (size, device), *tables = calls
    assert size >= 3 * grain and device == "cpu"
    assert tables == [(table, "meta"), (table, "cpu"), (table, "cpu")]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the race needs two threads")
def test_a_compiled_embeddings_gradient_is_the_eager_one_every_time():
    """Inductor's own code adds the rows of a repeated id into the table with atomic adds from every thread, in
    another order each call (with nn.Embedding this test fails); the model's Embedding sums them as eager does."""
    torch.manual_seed(0)
    table, idx, upstream = Embedding(65, 64), torch.randint(0, 65, (16, 256)), torch.randn(16, 256, 64)

    def gradient(lookup) -> torch.Tensor:
        table.zero_grad()
        (lookup(idx) * upstream).sum().backward()
        return table.weight.grad.clone()

    with torch_threads(2):  # the test runner's workers take one thread each, and one thread has no race
        eager, compiled = gradient(table), torch.compile(table)
        assert all(torch.equal(gradient(compiled), eager) for _ in range(3))
    assert isinstance(table, nn.Embedding) and torch.equal(table(idx), F.embedding(idx, table.weight))


def test_the_embedding_gradient_operator_passes_torchs_checks():
    """The operator's fake (shape-only) version and its registration, as torch.compile relies on them."""
    grad, idx = torch.randn(2, 5, 8), torch.tensor([[0, 3, 3, 1, 0], [2, 2, 2, 0, 1]])
    torch.library.opcheck(embedding_backward, (grad, idx, 4))
    expected = torch.zeros(4, 8).index_add_(0, idx.flatten(), grad.reshape(-1, 8))
    torch.testing.assert_close(embedding_backward(grad, idx, 4), expected)


def test_bf16_on_cpu_attends_with_the_formula_and_fp32_with_the_fused_kernel(monkeypatch):
    """torch's fused CPU kernel is slow in bf16 (fused_attention_is_slow): bf16 autocast takes the formula."""
    calls = []
    fused = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or fused(*a, **k))
    model, x = tiny_model(attention="sdpa"), random_tokens(2, 16)
    with torch.no_grad():
        reference = model(x)
        assert len(calls) == model.config.n_layer
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
    assert len(calls) == model.config.n_layer  # no fused call under bf16
    torch.testing.assert_close(mixed.float(), reference, atol=0.1, rtol=0.05)


def test_training_with_dropout_on_cpu_attends_with_the_formula_in_fp32_too(monkeypatch):
    """With dropout torch's fused CPU kernel falls back to its own slower formula: ours draws the mask instead."""
    calls = []
    fused = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or fused(*a, **k))
    model, x = tiny_model(attention="sdpa", dropout=0.1), random_tokens(2, 16)
    model(x)  # eval: no dropout, the fused kernel
    assert len(calls) == model.config.n_layer
    model.train()(x)
    assert len(calls) == model.config.n_layer
    tiny_model(attention="sdpa", dropout=0.0).train()(x)  # training without dropout keeps the fused kernel
    assert len(calls) == 2 * model.config.n_layer


def test_rope_rotates_in_the_dtype_of_its_input():
    rope = RotaryEmbedding(8, 16, base=10000.0)
    x = torch.randn(1, 2, 16, 8)
    cos, sin = rope.angles(torch.arange(16))
    rotated = RotaryEmbedding.rotate(x.bfloat16(), cos, sin)
    assert rotated.dtype == torch.bfloat16
    torch.testing.assert_close(rotated.float(), RotaryEmbedding.rotate(x, cos, sin), atol=0.05, rtol=0.02)


def test_bf16_kv_cache_by_the_formula_matches_the_full_forward():
    model, x = tiny_model(attention="sdpa").bfloat16(), random_tokens(2, TINY["block_size"])
    with torch.no_grad():
        full, cached = model(x).float(), _chunked_logits(model, x, [5, 1, 3, 1, 1, 4, 1]).float()
    torch.testing.assert_close(cached, full, atol=0.05, rtol=0.05)


# ----------------------------------------------------------------------------- the 2025 switches


def _all_switches(**overrides) -> GPTConfig:
    return tiny_config(mlp="relu2", qk_norm=True, tie_embeddings=False, zero_init_proj=True, value_embeds=True,
                       residual_scalars=True, logit_softcap=3.0, **overrides)  # fmt: skip


def test_relu2_mlp_is_relu_squared():
    model = tiny_model(mlp="relu2")
    z = torch.linspace(-2, 2, 9)
    torch.testing.assert_close(model.layers[0].mlp.act(z), torch.clamp(z, min=0) ** 2)
    assert model.layers[0].mlp.up_proj.out_features == 4 * TINY["n_embd"]  # two matrices at 4·C, no gate


def test_qk_norm_gives_every_head_unit_rms_queries_and_keys():
    # Learned positions, so no rotation comes after the norm; the formula kernel, so the scores module sees q and k.
    model = tiny_model(qk_norm=True, pos_emb="learned", attention="manual", norm_eps=1e-12)
    seen = []
    model.layers[0].self_attn.scores.register_forward_hook(lambda _m, args, _out: seen.append(args))
    with torch.no_grad():
        model(random_tokens(2, 8))
    for t in seen[0][:2]:  # q, k: (B, H, T, D)
        rms = t.pow(2).mean(-1).sqrt()
        torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-3, rtol=0)
    assert tiny_model().layers[0].self_attn.q_norm is None  # off by default


def test_qk_norm_keeps_bf16_queries_and_keys_in_bf16():
    """An fp32 gain times bf16 promotes to fp32: the norm's output would then leave the bf16 attention path."""
    model = tiny_model(qk_norm=True, attention="sdpa")
    seen = []
    model.layers[0].self_attn._attend = lambda q, k, v, mask: seen.append((q.dtype, k.dtype)) or torch.zeros_like(v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(random_tokens(2, 8))
    assert seen == [(torch.bfloat16, torch.bfloat16)]


def test_untied_head_is_a_matrix_of_its_own():
    tied, untied = tiny_model(), tiny_model(tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.embed_tokens.weight.data_ptr()
    assert untied.num_parameters() == tied.num_parameters() + TINY["vocab_size"] * TINY["n_embd"]
    # The token table is then a lookup, not a matmul: FLOPs count the head once either way.
    assert untied.flops_per_token() == tied.flops_per_token()


def test_zero_init_starts_every_block_as_the_identity():
    model = tiny_model(zero_init_proj=True)
    x = torch.randn(2, 8, TINY["n_embd"])
    with torch.no_grad():
        for block in model.layers:
            torch.testing.assert_close(block(x, model.mask[:8, :8], None, None), x, atol=0, rtol=0)
    # ...and they still learn: the gradient of a zero matrix is its input times its output's gradient.
    F.cross_entropy(model(random_tokens(2, 8)).flatten(0, 1), random_tokens(2, 8).flatten()).backward()
    assert model.layers[0].self_attn.o_proj.weight.grad.abs().sum() > 0
    assert model.layers[-1].mlp.down_proj.weight.grad.abs().sum() > 0


def test_value_embeddings_are_added_to_the_values_per_layer_and_token():
    model = tiny_model(value_embeds=True)
    assert len(model.value_embeds) == TINY["n_layer"]
    tokens = random_tokens(2, 8)
    with torch.no_grad():
        before = model(tokens)
        model.value_embeds[0].weight[tokens[0, 0]] += 1.0  # one token's row, in one layer
        after = model(tokens)
    assert not torch.equal(before, after)
    # Nothing else reads that row: sequence 1 changes only if it contains that token.
    if tokens[0, 0] not in tokens[1]:
        torch.testing.assert_close(before[1], after[1], atol=0, rtol=0)


def test_residual_scalars_start_as_the_plain_residual_and_mix_in_x0():
    torch.manual_seed(0)
    plain = GPT(tiny_config())
    torch.manual_seed(0)
    scaled = GPT(tiny_config(residual_scalars=True))  # λ = 1, μ = 0 and the same weights: the same function
    tokens = random_tokens(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(scaled(tokens), plain(tokens), atol=0, rtol=0)
        scaled.layers[1].x0_scale.fill_(0.5)
        assert not torch.equal(scaled(tokens), plain(tokens))
    names = {n for n, p in scaled.named_parameters() if p.dim() == 0}
    assert names == {f"layers.{i}.{s}" for i in range(TINY["n_layer"]) for s in ("resid_scale", "x0_scale")}


def test_logit_softcap_bounds_the_logits_and_keeps_small_ones():
    torch.manual_seed(0)
    plain = GPT(tiny_config())
    torch.manual_seed(0)
    capped = GPT(tiny_config(logit_softcap=2.0))
    tokens = random_tokens(2, 8)
    with torch.no_grad():
        for model in (plain, capped):
            model.lm_head.weight.mul_(30.0)  # logits of several units
        big, small = plain(tokens), capped(tokens)
    assert big.abs().max() > 4 and small.abs().max() <= 2.0  # tanh rounds to 1 in float32 far out)
    torch.testing.assert_close(small, 2.0 * torch.tanh(big / 2.0))


def test_all_switches_together_train_and_decode_with_a_cache():
    model = GPT(_all_switches())
    tokens = random_tokens(2, 16)
    loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # every new parameter is reached
    model.eval()
    with torch.no_grad():
        full = model(tokens)
        torch.testing.assert_close(_chunked_logits(model, tokens, [5, 1, 1, 9]), full, atol=1e-5, rtol=0)


def test_the_2025_switches_are_not_llama_shaped():
    assert GPTConfig().is_llama_shaped and GPTConfig(tie_embeddings=False, zero_init_proj=True).is_llama_shaped
    words = " ".join(_all_switches().llama_differences())
    for switch in ("QK-norm", "value embeddings", "residual/x0 scalars", "logits soft-capped at", "relu2"):
        assert switch in words
    assert "zero-initialised" not in words and "zero-initialised" in " ".join(_all_switches().extra_switches())
    with pytest.raises(TinyLLMError, match="logit_softcap"):
        GPTConfig(logit_softcap=0.0)
