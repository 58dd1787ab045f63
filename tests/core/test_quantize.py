"""Tests for the fast-decoding levers: weight-only int8 (tinyllm.core.quantize) and the compiled decode step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers.models import PRESET_NAMES, prompt_tensor, sharp_model
from tinyllm.core.generate import compile_decoder, generate_tokens
from tinyllm.core.quantize import SAME_INPUT, Int8Linear, quantize_int8, share_products


def test_int8_linear_rounds_each_row_to_127_steps_of_its_absmax():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, bias=True)
    q = Int8Linear(linear)
    w = linear.weight.detach()
    assert q.weight.dtype == torch.int8 and q.weight.shape == w.shape
    assert torch.equal(q.weight.abs().amax(dim=1), torch.full((48,), 127, dtype=torch.int8))  # absmax maps to ±127
    scale = q.scale.float()
    dequantized = q.weight.float() * scale[:, None]
    # Round-to-nearest: each weight within half a step of its row's own scale (plus float rounding).
    assert ((dequantized - w).abs() <= scale[:, None] / 2 * (1 + 1e-6)).all()
    assert q.scale.dtype == torch.bfloat16  # one scale, in the kernel's dtype: both kernels use the same weights


@pytest.mark.parametrize("rows", [1, 3, Int8Linear.INT8_KERNEL_MAX_ROWS, Int8Linear.INT8_KERNEL_MAX_ROWS + 1, 40])
def test_int8_linear_matches_float_linear_on_both_kernels(rows, monkeypatch):
    """Few rows run the int8 kernel (bfloat16 activations), many the dequantized matmul: both ≈ the fp32 layer."""
    kernel_calls = []
    kernel = torch._weight_int8pack_mm
    monkeypatch.setattr(torch, "_weight_int8pack_mm", lambda *a: kernel_calls.append(1) or kernel(*a))
    torch.manual_seed(1)
    linear = nn.Linear(64, 48, bias=True)
    with torch.no_grad():
        linear.bias.normal_()
    x = torch.randn(rows, 64)
    q = Int8Linear(linear)
    with torch.inference_mode():
        ref, out = linear(x), q(x)
        exact = nn.functional.linear(x, q.weight.float() * q.scale.float()[:, None], linear.bias)
    assert out.shape == ref.shape and out.dtype == torch.float32
    on_kernel = rows <= Int8Linear.INT8_KERNEL_MAX_ROWS
    assert len(kernel_calls) == on_kernel
    # The kernel rounds activations to bfloat16 (2^-9 relative); the dequantized matmul is exact in fp32.
    assert (out - exact).abs().max() <= (0.02 if on_kernel else 1e-5) * ref.abs().max()
    assert (out - ref).abs().max() <= 0.03 * ref.abs().max()
    assert (out - ref).abs().max() > 1e-4 * ref.abs().max()  # it really is quantized


def test_quantize_int8_replaces_every_linear_and_keeps_the_rest():
    model = sharp_model("modern", tie_embeddings=True).train()
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    quantize_int8(model)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == n_linear
    # The tied head got its own int8 copy; the embedding it was tied to stays float for lookups.
    assert isinstance(model.lm_head, Int8Linear) and model.lm_head.weight.dtype == torch.int8
    assert model.embed_tokens.weight.dtype == torch.float32
    assert not model.training


def test_layers_with_one_input_share_one_stacked_weight_and_its_columns_are_their_products(monkeypatch):
    """q, k, v (and gate, up) become row blocks of one int8 weight, and one product with it gives each layer's own
    product bit for bit: a compiled decode step computes that one product instead of one per layer."""
    model = quantize_int8(sharp_model("modern", n_layer=1))
    assert all(m.shared is None for m in model.modules() if isinstance(m, Int8Linear))  # eager: layers stay apart
    share_products(model)  # as compile_decoder does
    groups = ((model.layers[0].self_attn, SAME_INPUT[0]), (model.layers[0].mlp, SAME_INPUT[1]))
    inputs = [torch.randn(shape, generator=torch.Generator().manual_seed(rows)) * 3
              for rows in range(1, Int8Linear.INT8_KERNEL_MAX_ROWS + 1) for shape in ((rows, 32), (rows, 1, 32))]
    for module, names in groups:
        layers = [getattr(module, name) for name in names]
        weight, scale, _, _ = layers[0].shared
        assert weight.shape == (sum(layer.out_features for layer in layers), layers[0].in_features)
        start = 0
        for layer in layers:
            assert layer.shared[0] is weight and layer.shared[1] is scale
            assert layer.shared[2:] == (start, start + layer.out_features)
            start += layer.out_features
            for own, stacked in ((layer.weight, weight), (layer.scale, scale)):  # views of the stack, no copies
                assert own.untyped_storage().data_ptr() == stacked.untyped_storage().data_ptr()
    with torch.inference_mode():
        alone = [[getattr(m, name)(x) for m, names in groups for name in names] for x in inputs]
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the branch a compiled step traces
        stacked = [[getattr(m, name)(x) for m, names in groups for name in names] for x in inputs]
    for a, b in zip(alone, stacked):
        assert all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_int8_model_follows_the_float_model(name):
    model = sharp_model(name, std=0.1)
    prompt = prompt_tensor(2, 12)
    with torch.inference_mode():
        ref = model(prompt)
        quantize_int8(model)
        cache = model.new_cache(2)
        cached = torch.cat([model(prompt[:, :-1], cache), model(prompt[:, -1:], cache)], dim=1)  # prefill + decode
        full = model(prompt)
    spread = (ref.max(-1).values - ref.min(-1).values).mean()
    assert (full - ref).abs().max() < 0.05 * spread, name
    assert (cached - ref).abs().max() < 0.05 * spread, name  # the decode step runs the int8 kernel
    assert (full.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


# Compiling a decoder costs seconds per layer (Inductor's C++ compiles): two layers where layers must differ (the
# int8 products are counted per layer), one elsewhere.
@pytest.mark.slow
@pytest.mark.parametrize(("name", "quantize", "n_layer"),
                         [("modern", False, 1), ("modern", True, 2), ("vanilla", True, 1)])
def test_compiled_decoder_equals_eager_and_never_recompiles_while_generating(name, quantize, n_layer):
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    model = sharp_model(name, block_size=12, n_layer=n_layer)
    if quantize:
        quantize_int8(model)
    decoder, codes = run_and_get_code(compile_decoder, model, 2)
    if quantize:  # one int8 product per group of layers with one input: q/k/v, o, gate/up (or up) and down; the head
        products = 4 * model.config.n_layer + 1
        assert codes and all(code.count("_weight_int8pack_mm(") == products for code in codes)
    graphs = _graph_count()
    prompt = prompt_tensor(2, 1)  # a one-token prompt: the first decode step sees a cache of length 1
    n = 3 * model.config.block_size  # several window shifts: every cache length, and the full cache
    logits: dict[str, list[torch.Tensor]] = {"eager": [], "compiled": []}

    def recording(fn, key):
        def step(idx, cache):
            out = fn(idx, cache)
            logits[key].append(out[:, -1].clone())
            return out
        return step

    eager = list(generate_tokens(model, prompt, n, temperature=0, decoder=recording(model, "eager")))
    compiled = list(generate_tokens(model, prompt, n, temperature=0, decoder=recording(decoder, "compiled")))
    assert _graph_count() == graphs, "decoding compiled a new graph after compile_decoder's warm-up"
    assert len(logits["compiled"]) == len(logits["eager"]) > 2 * model.config.block_size
    for a, b in zip(logits["eager"], logits["compiled"]):
        assert (a - b).abs().max() <= 1e-4
    assert torch.equal(torch.stack(eager), torch.stack(compiled))


def test_compile_decoder_warms_up_only_cache_lengths_that_decode():
    """block_size 1 never decodes (each token is a prefill of one): nothing to warm up, nothing to fail."""
    model, graphs = sharp_model("modern", block_size=1), _graph_count()
    decoder = compile_decoder(model)
    assert _graph_count() == graphs
    tokens = list(generate_tokens(model, prompt_tensor(1, 1), 4, temperature=0, decoder=decoder))
    assert torch.equal(torch.stack(tokens), torch.stack(list(generate_tokens(model, prompt_tensor(1, 1), 4, temperature=0))))


def _decode_step(step, model, prompt: torch.Tensor) -> torch.Tensor:
    """The logits of ``step`` (the model or its decoder) for the prompt's last token, the rest prefilled by the model."""
    with torch.inference_mode():
        cache = model.new_cache(prompt.size(0))
        model(prompt[:, :-1], cache)
        return step(prompt[:, -1:], cache)


@pytest.mark.slow
def test_compiled_decoders_of_several_models_in_one_process_each_decode_their_own_model():
    """A decoder checks only its inputs, and these models' caches have one shape: each decoder's graph must stay its
    own (a step function with a code object of its own, compiled as one graph), or one model runs another's graph:
    loudly for another architecture, silently for one that differs in a constant (the soft cap)."""
    torch._dynamo.reset()
    models = [sharp_model("modern+softcap", seed=1, n_layer=1),
              sharp_model("modern+softcap", seed=1, n_layer=1, logit_softcap=2.0),
              sharp_model("vanilla", seed=2, n_layer=1, vocab_size=13),
              sharp_model("modern+value_embeds", seed=3, n_layer=1)]
    decoders = [compile_decoder(m) for m in models]
    prompt = prompt_tensor(1, 4)
    for model, decoder in zip(models, decoders):
        torch.testing.assert_close(_decode_step(decoder, model, prompt), _decode_step(model, model, prompt), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_compiled_decoder_reads_weights_changed_in_place():
    torch._dynamo.reset()
    model = sharp_model("modern", block_size=12, n_layer=1)
    quantize_int8(model)
    decoder = compile_decoder(model)
    prompt = prompt_tensor(1, 3)
    before = _decode_step(decoder, model, prompt)
    with torch.no_grad():
        for tensor in (*model.parameters(), *(b for b in model.buffers() if b.dtype == torch.int8)):
            tensor.copy_(tensor.flip(-1))  # every weight matrix, int8 or float, reordered along its last dimension
    eager, compiled = _decode_step(model, model, prompt), _decode_step(decoder, model, prompt)
    assert (eager - before).abs().max() > 0.1  # the change changes the logits ...
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=0)  # ... and the compiled step sees it
