"""Tests for tinyllm.core.generate: KV cache vs recompute, the window policy, sampling, errors, stop strings.

Everything runs on CPU with tiny models. A freshly initialised GPT (weights
~N(0, 0.02)) has near-uniform logits, so greedy decoding would be decided by
float noise. ``sharp_model`` therefore re-draws every weight matrix with a much
larger std: logits then spread over several units, attention is far from
uniform, and the next token depends on the whole context (and on positions).
Greedy comparisons check the top-1/top-2 margin so that agreement is never a
coin toss, and the window-policy test checks that a *different* policy would
have produced different tokens, so the test is able to fail.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.models import PRESET_NAMES, TINY, prompt_tensor, sharp_model, torch_threads
from tinyllm.core.generate import check_sampling, generate, generate_tokens, make_generators, sample_next
from tinyllm.core.model import GPT
from tinyllm.core.tokenizers import CharTokenizer
from tinyllm.errors import TinyLLMError

VOCAB = "abcdefghij "  # 11 characters: a CharTokenizer matching vocab_size=11
TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models: thread start-up and contention cost more than they save on a small shared CPU.
    with torch_threads(1):
        yield


def reference_greedy(model: GPT, prompt: torch.Tensor, n: int, keep: int | None = None) -> tuple[list[list[int]], float]:
    """The documented window policy, written independently with plain recompute.

    The window starts as the prompt's last block_size tokens; whenever it holds
    more than block_size tokens it is cropped to its newest ``keep`` (default
    block_size // 2). Returns the tokens per row and the smallest top-1/top-2
    logit margin seen (to prove that greedy is not decided by float noise).
    """
    block = model.config.block_size
    keep = max(1, block // 2) if keep is None else keep
    rows = []
    min_margin = math.inf
    with torch.no_grad():
        for row in prompt.tolist():
            window = row[-block:]
            out = []
            for _ in range(n):
                if len(window) > block:
                    window = window[-keep:]
                logits = model(torch.tensor([window]))[0, -1]
                top2 = logits.topk(2).values
                min_margin = min(min_margin, float(top2[0] - top2[1]))
                tok = int(logits.argmax())
                out.append(tok)
                window.append(tok)
            rows.append(out)
    return rows, min_margin


def run_tokens(model: GPT, prompt: torch.Tensor, n: int, **kw) -> list[list[int]]:
    steps = list(generate_tokens(model, prompt, n, **kw))
    assert len(steps) == n
    for s in steps:
        assert s.shape == (prompt.size(0),) and s.dtype == torch.long
    return torch.stack(steps, dim=1).tolist()


# ----------------------------------------------------------------------------- 1. KV cache == recompute


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_cached_logits_equal_full_recompute_every_step(name, attention):
    model = sharp_model(name, attention=attention)
    block = model.config.block_size
    b, t0 = 2, 5
    g = torch.Generator().manual_seed(7)
    seq = prompt_tensor(b, t0, seed=3)
    with torch.inference_mode():
        cache = model.new_cache(b)
        prefill = model(seq, cache)
        assert cache.length == t0
        full = model(seq)
        assert (prefill - full).abs().max().item() <= TOL  # every prompt position, not just the last
        last = prefill[:, -1]
        logit_spread = 0.0
        while seq.size(1) < block:
            # feed a mix of greedy and random tokens so both rows follow different paths
            nxt = last.argmax(-1) if seq.size(1) % 2 else torch.randint(0, TINY["vocab_size"], (b,), generator=g)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            last = model(seq[:, -1:], cache)[:, -1]
            ref = model(seq)[:, -1]
            diff = (last - ref).abs().max().item()
            assert diff <= TOL, f"{name}/{attention}: step at length {seq.size(1)} differs by {diff}"
            assert cache.length == seq.size(1)
            logit_spread = max(logit_spread, (ref.max(-1).values - ref.min(-1).values).min().item())
        # the comparison is meaningful: logits are far from uniform
        assert logit_spread > 1.0
        # the buffers are full: one more token must be refused, not silently written past block_size
        with pytest.raises(TinyLLMError):
            model(seq[:, -1:], cache)


def test_cache_detects_wrong_positions():
    """Sanity check that the comparison above can fail: a cache that forgets its length differs."""
    model = sharp_model("modern")
    seq = prompt_tensor(1, 6)
    with torch.inference_mode():
        cache = model.new_cache(1)
        model(seq[:, :-1], cache)
        cache.length -= 1  # corrupt: the new token would sit at the wrong position
        wrong = model(seq[:, -1:], cache)[:, -1]
        assert (wrong - model(seq)[:, -1]).abs().max().item() > 1e-3


def _record_last_logits(model: GPT, monkeypatch) -> list[torch.Tensor]:
    calls: list[torch.Tensor] = []
    original = model.forward

    def spy(idx, cache=None):
        out = original(idx, cache)
        calls.append(out[:, -1].clone())
        return out

    monkeypatch.setattr(model, "forward", spy)
    return calls


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_generate_tokens_cache_logits_match_recompute_across_window_shifts(name, monkeypatch):
    model = sharp_model(name)
    block = model.config.block_size
    prompt = prompt_tensor(2, 4)
    n = 3 * block
    calls = _record_last_logits(model, monkeypatch)
    cached = run_tokens(model, prompt, n, temperature=0, kv_cache=True)
    cached_logits = list(calls)
    calls.clear()
    recomputed = run_tokens(model, prompt, n, temperature=0, kv_cache=False)
    assert cached == recomputed
    assert len(cached_logits) == len(calls) == n  # one forward per new token in both modes
    for step, (a, b) in enumerate(zip(cached_logits, calls)):
        assert (a - b).abs().max().item() <= TOL, f"{name}: step {step}"


WINDOW_CASES = [
    # (preset, block_size, prompt_len, new_tokens)
    *[(name, 16, 3, 48) for name in PRESET_NAMES],  # short prompt, generation well past block_size
    *[(name, 16, 21, 40) for name in PRESET_NAMES],  # prompt longer than block_size
    ("modern", 16, 16, 33),  # prompt exactly block_size
    ("vanilla", 7, 2, 30),  # odd block size: keep = 3
    ("vanilla+rope", 7, 12, 20),
    ("modern", 2, 5, 12),  # keep = 1
    ("vanilla", 1, 3, 6),  # keep = max(1, 0) = 1
]


@pytest.mark.parametrize("name,block,prompt_len,n", WINDOW_CASES)
def test_window_policy_cache_equals_recompute_equals_reference(name, block, prompt_len, n):
    model = sharp_model(name, block_size=block)
    prompt = prompt_tensor(2, prompt_len, seed=prompt_len + block)
    cached = run_tokens(model, prompt, n, temperature=0, kv_cache=True)
    recomputed = run_tokens(model, prompt, n, temperature=0, kv_cache=False)
    reference, margin = reference_greedy(model, prompt, n)
    assert cached == recomputed
    assert cached == reference
    assert margin > 1e-4, "greedy decided by float noise; the model is too uniform"


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_window_policy_is_distinguishable(name):
    """The reference is not vacuous: another crop policy gives other tokens for these models."""
    model = sharp_model(name)
    prompt = prompt_tensor(2, 3, seed=19)
    block = model.config.block_size
    documented, _ = reference_greedy(model, prompt, 3 * block)
    other_keeps = [block - 1, 1, block // 2 + 1, block // 2 - 1]  # sliding-by-one, tiny, off-by-one
    for keep in other_keeps:
        assert reference_greedy(model, prompt, 3 * block, keep=keep)[0] != documented, keep


# ----------------------------------------------------------------------------- 2. batch == one by one


@pytest.mark.parametrize(
    "name,sampling",
    [
        ("modern", dict(temperature=1.0, top_k=5)),
        ("vanilla", dict(temperature=1.0, top_k=5)),
        ("vanilla+rope", dict(temperature=0.8, top_p=0.9)),
        ("vanilla+swiglu", dict(temperature=1.3)),
    ],
)
@pytest.mark.parametrize("kv_cache", [True, False])
def test_batch_equals_samples_one_by_one(name, sampling, kv_cache):
    model = sharp_model(name)
    prompt_ids = [1, 4, 2]
    s, n = 123, 40  # past block_size, so window shifts happen too
    batch = generate(model, prompt_ids, n, num_samples=3, seed=s, kv_cache=kv_cache, **sampling)
    assert len(batch.tokens) == 3 and all(len(t) == n for t in batch.tokens)
    for i in range(3):
        single = generate(model, prompt_ids, n, num_samples=1, seed=s + i, kv_cache=kv_cache, **sampling)
        assert batch.tokens[i] == single.tokens[0], f"sample {i}"
    assert len({tuple(t) for t in batch.tokens}) == 3  # the samples really are different draws


def test_make_generators_seeds_sample_i_with_seed_plus_i():
    gens = make_generators(10, 3, torch.device("cpu"))
    for i, g in enumerate(gens):
        expected = torch.rand(4, generator=torch.Generator().manual_seed(10 + i))
        assert torch.equal(torch.rand(4, generator=g), expected)


# ----------------------------------------------------------------------------- 3. determinism, RNG


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_temperature_zero_is_deterministic_and_argmax(name):
    model = sharp_model(name)
    prompt_ids = [3, 1, 4, 1, 5]
    n = 2 * TINY["block_size"]
    a = generate(model, prompt_ids, n, num_samples=2, temperature=0.0)  # no seed: must not matter
    b = generate(model, prompt_ids, n, num_samples=1, temperature=0.0, seed=99, top_k=3, top_p=0.5)
    reference, margin = reference_greedy(model, torch.tensor([prompt_ids]), n)
    assert margin > 1e-4
    assert a.tokens == [reference[0], reference[0]]
    assert b.tokens == reference
    assert len(set(reference[0])) > 2  # not a degenerate constant sequence


def test_same_seed_same_samples_different_seed_different():
    model = sharp_model("modern")
    kw = dict(num_samples=2, temperature=1.0, top_k=8)
    a = generate(model, [0, 1, 2], 30, seed=5, **kw)
    b = generate(model, [0, 1, 2], 30, seed=5, **kw)
    c = generate(model, [0, 1, 2], 30, seed=6, **kw)
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens
    assert a.tokens[1] == c.tokens[0]  # seed 5's sample 1 is seed 6's sample 0


@pytest.mark.parametrize("seed", [0, None])
@pytest.mark.parametrize("kv_cache", [True, False])
def test_generation_leaves_global_rng_untouched(seed, kv_cache):
    model = sharp_model("vanilla")
    torch.manual_seed(2024)
    before = torch.get_rng_state()
    expected_next = torch.rand(5)
    torch.set_rng_state(before)
    g = generate(model, [1, 2, 3], 40, num_samples=2, seed=seed, temperature=1.0, top_p=0.95, kv_cache=kv_cache)
    assert len(g.tokens[0]) == 40
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.rand(5), expected_next)


def test_sample_next_leaves_global_rng_untouched():
    torch.manual_seed(1)
    before = torch.get_rng_state()
    logits = torch.randn(3, 11, generator=torch.Generator().manual_seed(0))
    sample_next(logits, 1.0, 4, 0.9, make_generators(0, 3, torch.device("cpu")))
    assert torch.equal(torch.get_rng_state(), before)


def test_generation_result_fields():
    model = sharp_model("modern")
    g = generate(model, [1, 2], 10, num_samples=2, seed=0)
    assert g.seconds > 0 and 0 < g.first_token_seconds <= g.seconds
    assert g.tokens_per_second > 0
    assert g.texts == []  # no decode, no texts
    assert all(0 <= t < TINY["vocab_size"] for row in g.tokens for t in row)


# ----------------------------------------------------------------------------- 4. sample_next


def _draws(logits: torch.Tensor, n: int, seed: int = 0, **kw) -> torch.Tensor:
    gens = make_generators(seed, logits.size(0), logits.device)
    kw = {"temperature": 1.0, "top_k": None, "top_p": None, **kw}
    return torch.stack([sample_next(logits, generators=gens, **kw) for _ in range(n)])  # (n, B)


def test_sample_next_top_k_one_is_argmax():
    logits = torch.randn(4, 11, generator=torch.Generator().manual_seed(3))
    draws = _draws(logits, 50, top_k=1, temperature=1.5)
    assert torch.equal(draws, logits.argmax(-1).expand(50, 4))


def test_sample_next_temperature_zero_is_argmax_and_uses_no_generator():
    logits = torch.randn(4, 11, generator=torch.Generator().manual_seed(4))
    gens = make_generators(0, 4, torch.device("cpu"))
    states = [g.get_state() for g in gens]
    assert torch.equal(sample_next(logits, 0.0, None, None, gens), logits.argmax(-1))
    assert all(torch.equal(g.get_state(), s) for g, s in zip(gens, states))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_sample_next_top_k_restricts_support(k):
    logits = torch.randn(2, 11, generator=torch.Generator().manual_seed(5)) * 0.5  # flat-ish: all ids likely
    draws = _draws(logits, 1500, top_k=k)
    for row in range(2):
        allowed = set(logits[row].topk(k).indices.tolist())
        seen = set(draws[:, row].tolist())
        assert seen == allowed, (row, seen, allowed)
    # without top_k every id shows up, so the restriction above is the filter's doing
    assert set(_draws(logits[:1], 1500)[:, 0].tolist()) == set(range(11))


def test_sample_next_top_p_restricts_to_nucleus():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    d07 = _draws(logits, 3000, top_p=0.7)[:, 0]
    assert set(d07.tolist()) == {0, 1}
    frac0 = (d07 == 0).float().mean().item()
    assert abs(frac0 - 0.5 / 0.8) < 0.05  # renormalised over the nucleus
    assert set(_draws(logits, 500, top_p=0.5)[:, 0].tolist()) == {0}
    assert set(_draws(logits, 500, top_p=0.81)[:, 0].tolist()) == {0, 1, 2}
    assert set(_draws(logits, 3000, top_p=1.0)[:, 0].tolist()) == {0, 1, 2, 3}
    # order in the vocabulary does not matter
    perm = torch.tensor([2, 0, 3, 1])
    assert set(_draws(logits[:, perm], 2000, top_p=0.7)[:, 0].tolist()) == {1, 3}


def test_sample_next_top_k_and_top_p_combine():
    logits = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    # top_k=3 renormalises to [4/9, 3/9, 2/9]; top_p=0.7 then keeps the first two (4/9 < 0.7 <= 7/9)
    assert set(_draws(logits, 2000, top_k=3, top_p=0.7)[:, 0].tolist()) == {0, 1}


@pytest.mark.parametrize("temperature", [1e-3, 1e-6, 1e-12, 1e-30])
def test_sample_next_tiny_temperature_is_greedy(temperature):
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(6)) * 3
    draws = _draws(logits, 30, temperature=temperature)
    assert torch.equal(draws, logits.argmax(-1).expand(30, 5))


def test_sample_next_never_nan_and_in_range():
    logits = torch.randn(3, 11, generator=torch.Generator().manual_seed(8)) * 20
    for kw in [dict(temperature=5.0), dict(temperature=0.05, top_k=11), dict(temperature=1.0, top_p=0.01),
               dict(temperature=1.0, top_k=50), dict(temperature=2.0, top_k=2, top_p=0.3)]:
        draws = _draws(logits, 50, **kw)
        assert draws.dtype == torch.long
        assert ((draws >= 0) & (draws < 11)).all(), kw


def test_sample_next_draws_what_torch_multinomial_draws_with_the_same_generator():
    logits = torch.randn(3, 11, generator=torch.Generator().manual_seed(9)) * 2
    ours = _draws(logits, 400, temperature=0.8, seed=5)
    gens, probs = make_generators(5, 3, torch.device("cpu")), (logits / 0.8).softmax(-1)
    theirs = torch.stack([torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(gens)])
                          for _ in range(400)])
    assert torch.equal(ours, theirs)


def test_sample_next_draws_each_token_with_its_probability():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    draws = _draws(p.log()[None], 8000)[:, 0]
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    assert freq[4] == 0 and torch.allclose(freq, p, atol=0.02), freq


@pytest.mark.parametrize("row", [[1.0, 3.0, -2.0], [-3.0, -1.0, -2.0]])  # overflow to +inf; every logit to -inf
def test_sample_next_subnormal_temperature_is_greedy(row):
    logits = torch.tensor([row])
    assert sample_next(logits, 1e-40, None, None, make_generators(0, 1, torch.device("cpu"))).tolist() == [1]


def test_sample_next_overflowing_row_is_greedy_and_the_others_still_sample():
    # At T = 1e-40, logits of ±1e-42 scale to ±0.01 (nearly uniform); logits of order 1 overflow to ±inf.
    logits = torch.tensor([[1e-42, 0.0, -1e-42], [1.0, 3.0, -2.0]])
    draws = _draws(logits, 200, temperature=1e-40)
    assert set(draws[:, 0].tolist()) == {0, 1, 2}
    assert draws[:, 1].tolist() == [1] * 200


def test_sample_next_refuses_nan_logits_in_one_line():
    logits = torch.tensor([[1.0, 3.0, -2.0], [1.0, float("nan"), 3.0]])
    with pytest.raises(TinyLLMError, match="logits are NaN"):
        sample_next(logits, 0.8, None, None, make_generators(0, 2, torch.device("cpu")))


# ----------------------------------------------------------------------------- 5. clear errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(prompt_ids=[]), "empty"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=-3), "max_new_tokens"),
        (dict(temperature=-0.1), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_k=-2), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=-0.2), "top_p"),
        (dict(num_samples=0), "num_samples"),
        (dict(stop="x"), "decode"),
        (dict(on_text=print), "decode"),
    ],
)
def test_generate_raises_clear_errors(kwargs, match):
    model = sharp_model("modern")
    args = {"prompt_ids": [1, 2], "max_new_tokens": 5, **kwargs}
    with pytest.raises(TinyLLMError, match=match):
        generate(model, **args)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(prompt=torch.zeros(2, 0, dtype=torch.long)), "empty"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
    ],
)
def test_generate_tokens_raises_clear_errors(kwargs, match):
    model = sharp_model("modern")
    args = {"prompt": torch.tensor([[1, 2]]), "max_new_tokens": 5, **kwargs}
    with pytest.raises(TinyLLMError, match=match):
        next(iter(generate_tokens(model, **args)))


def test_nan_temperature_is_a_clear_error():
    model = sharp_model("modern")
    with pytest.raises(TinyLLMError, match="temperature"):
        generate(model, [1, 2], 5, temperature=float("nan"))


def test_check_sampling_accepts_edges():
    check_sampling(0.0, None, None)
    check_sampling(1.0, 1, 1.0)
    check_sampling(0.5, 10_000, 1e-6)


def test_unknown_prompt_character_is_named():
    tok = CharTokenizer("abc")
    assert tok.encode("cab") == [2, 0, 1]
    with pytest.raises(TinyLLMError) as info:
        tok.encode("abz")
    assert "'z'" in str(info.value)
    assert "'a'" not in str(info.value) and "'b'" not in str(info.value)


# ----------------------------------------------------------------------------- 6. stop strings, streaming


def _full_text(model, tok, prompt_ids, n, **sampling):
    g = generate(model, prompt_ids, n, decode=tok.decode, **sampling)
    return g.texts[0]


def _stop_in_the_middle(text: str, length: int) -> tuple[str, int]:
    """A substring of ``text`` whose first occurrence is well inside it (not at the start)."""
    for start in range(3, len(text) - length - 3):
        stop = text[start : start + length]
        if text.find(stop) >= 3:
            return stop, text.find(stop)
    raise AssertionError(f"no usable stop string in {text!r}")


@pytest.mark.parametrize("name", ["modern", "vanilla"])
@pytest.mark.parametrize("stop_len", [1, 2, 3])
def test_stop_string_cuts_text_and_stream_matches(name, stop_len):
    model = sharp_model(name)
    tok = CharTokenizer(VOCAB)
    prompt_ids = tok.encode("abc")
    n = 40
    sampling = dict(seed=17, temperature=1.0)  # seeded sampling: varied text, yet reproducible
    full = _full_text(model, tok, prompt_ids, n, **sampling)
    assert len(full) == n
    stop, at = _stop_in_the_middle(full, stop_len)
    pieces: list[str] = []
    g = generate(model, prompt_ids, n, decode=tok.decode, stop=stop, on_text=pieces.append, **sampling)
    assert g.texts[0] == full[:at]
    assert stop not in g.texts[0]
    assert "".join(pieces) == g.texts[0]
    assert all(p for p in pieces)  # no empty callbacks
    # generation ended as soon as the stop string was complete
    assert len(g.tokens[0]) == at + len(stop)
    assert tok.decode(g.tokens[0]) == full[: at + len(stop)]


def test_stream_without_stop_concatenates_to_text():
    model = sharp_model("vanilla+rope")
    tok = CharTokenizer(VOCAB)
    pieces: list[str] = []
    g = generate(model, tok.encode("hi "), 37, decode=tok.decode, on_text=pieces.append, seed=3, temperature=1.0)
    assert "".join(pieces) == g.texts[0] == tok.decode(g.tokens[0])
    assert len(g.texts[0]) == 37
    assert len(pieces) > 1  # it really streamed, token by token


def test_stop_string_never_hit_returns_everything():
    model = sharp_model("modern")
    tok = CharTokenizer(VOCAB)
    full = _full_text(model, tok, tok.encode("ab"), 30, temperature=0)
    stop = next(a + b for a in VOCAB for b in VOCAB if a + b not in full)
    pieces: list[str] = []
    g = generate(model, tok.encode("ab"), 30, decode=tok.decode, stop=stop, on_text=pieces.append, temperature=0)
    assert g.texts[0] == full
    assert "".join(pieces) == full
    assert len(g.tokens[0]) == 30


def test_stop_string_at_the_very_start():
    model = sharp_model("modern")
    tok = CharTokenizer(VOCAB)
    full = _full_text(model, tok, tok.encode("ab"), 20, temperature=0)
    pieces: list[str] = []
    g = generate(model, tok.encode("ab"), 20, decode=tok.decode, stop=full[:2], on_text=pieces.append, temperature=0)
    assert g.texts[0] == ""
    assert "".join(pieces) == ""
    assert len(g.tokens[0]) == 2


def test_stop_string_with_several_samples():
    model = sharp_model("vanilla")
    tok = CharTokenizer(VOCAB)
    n, stop = 60, "a"
    pieces: list[str] = []
    g = generate(model, tok.encode("bcd"), n, num_samples=4, decode=tok.decode, stop=stop,
                 on_text=pieces.append, seed=11, temperature=1.0)
    assert "".join(pieces) == g.texts[0]
    hit, ends = 0, []
    for text, ids in zip(g.texts, g.tokens):
        decoded = tok.decode(ids)
        assert stop not in text
        assert decoded.startswith(text)
        if stop in decoded:
            hit += 1
            assert decoded.index(stop) == len(text)
        ends.append(len(text) + len(stop) if stop in decoded else math.inf)  # one token per character
    # Generation stops at the step where the last sample hits the stop string, else after n tokens.
    assert len(g.tokens[0]) == min(n, max(ends))
    assert hit >= 1  # the test exercises the cut


# ----------------------------------------------------------------------------- 7. the cache never grows


@pytest.mark.parametrize("name", PRESET_NAMES)
@pytest.mark.parametrize("prompt_len", [3, 21])
def test_kv_cache_never_grows(name, prompt_len, monkeypatch):
    model = sharp_model(name)
    cfg = model.config
    created = []
    original = model.new_cache

    def spy(*args, **kwargs):
        cache = original(*args, **kwargs)
        created.append(cache)
        return cache

    monkeypatch.setattr(model, "new_cache", spy)
    b, n = 3, 3 * cfg.block_size
    shape = (b, cfg.n_head, cfg.block_size, cfg.head_dim)
    prompt = prompt_tensor(b, prompt_len)
    lengths, ptrs = [], None
    for _ in generate_tokens(model, prompt, n, temperature=1.0, seed=0):
        assert len(created) == 1  # one cache for the whole generation, reused across window shifts
        cache = created[0]
        assert len(cache.keys) == len(cache.values) == cfg.n_layer
        for k, v in zip(cache.keys, cache.values):
            assert tuple(k.shape) == shape and tuple(v.shape) == shape
        now = [t.data_ptr() for t in (*cache.keys, *cache.values)]
        assert ptrs is None or now == ptrs  # the very same buffers, never reallocated
        ptrs = now
        lengths.append(cache.length)
    assert len(lengths) == n and max(lengths) <= cfg.block_size
    assert lengths.count(cfg.block_size) >= 2  # it did fill up more than once: window shifts happened
    assert min(lengths[1:]) >= 1


def test_generate_uses_one_fixed_size_cache(monkeypatch):
    model = sharp_model("modern")
    created = []
    original = model.new_cache
    monkeypatch.setattr(model, "new_cache", lambda *a, **k: created.append(original(*a, **k)) or created[-1])
    generate(model, [1, 2, 3], 3 * TINY["block_size"], num_samples=2, seed=0)
    assert len(created) == 1
    shape = (2, TINY["n_head"], TINY["block_size"], TINY["n_embd"] // TINY["n_head"])
    assert all(tuple(t.shape) == shape for t in (*created[0].keys, *created[0].values))
    assert created[0].length <= TINY["block_size"]


def test_recompute_mode_creates_no_cache(monkeypatch):
    model = sharp_model("modern")

    def forbidden(*a, **k):
        raise AssertionError("kv_cache=False must not allocate a cache")

    monkeypatch.setattr(model, "new_cache", forbidden)
    assert len(run_tokens(model, prompt_tensor(1, 3), 20, kv_cache=False, seed=0)[0]) == 20
