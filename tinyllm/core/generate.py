"""Autoregressive generation: sampling, a context window, and the KV cache.

Recompute (the cache off) and the KV cache (on) run through the same loop and
see the same tokens at the same absolute positions, so their logits agree to
float rounding and, with the model's own float weights, greedy text is
identical (int8 weights, ``tinyllm.core.quantize``, round a prompt and a decode
step differently). The only difference is what is fed
to the model: the whole window, or just the newest token.

Past ``block_size``: when the window is full, its oldest tokens are dropped so
that ``keep = block_size // 2`` remain, and (with the cache) those are
prefilled again at positions 0..keep-1. Recompute uses the very same window.
This costs one prefill per ``block_size / 2`` new tokens instead of one per
token (a window sliding by one token would need a full recompute every step,
because every token's absolute position changes).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal

import torch
from torch import Tensor

from tinyllm.compat import error_on_graph_break
from tinyllm.core.model import GPT, KVCache
from tinyllm.core.quantize import quantize_int8, share_products
from tinyllm.errors import TinyLLMError


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature >= 0:  # also catches NaN
        raise TinyLLMError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise TinyLLMError(f"top_k must be at least 1 (or unset), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise TinyLLMError(f"top_p must be in (0, 1], got {top_p}")


def check_request(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None) -> None:
    """The options of one generation, checked before any work (or any text) is done."""
    if max_new_tokens < 1:
        raise TinyLLMError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    check_sampling(temperature, top_k, top_p)


def sample_next(
    logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, generators: list[torch.Generator]
) -> Tensor:
    """One next token per row of ``logits`` (B, V).

    temperature 0 is greedy (argmax; no division by zero). Otherwise
    p = softmax(logits / T), restricted to the ``top_k`` most likely tokens
    and to the smallest set whose probability reaches ``top_p`` (nucleus
    sampling, Holtzman et al., 2019, arXiv:1904.09751), and one token drawn
    from p by an exponential race:

        token = argmax_i p_i / E_i,  E_i ~ Exp(1)

    token i wins with probability p_i (the Gumbel-max trick, Gumbel, 1954, with
    the logarithms taken off). ``torch.multinomial`` draws one sample the same
    way, with the same draws, after checks of p that cost more than the draw
    itself; here one read of each row's winning p_i / E_i stands for them. Row i
    draws from its own generator, so a batch of samples equals the same samples
    drawn one by one.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_k is not None and top_k < scaled.size(-1):
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens more likely than it already reach top_p (the first always stays).
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        scaled = scaled.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = scaled.softmax(dim=-1)
    noise = torch.empty_like(probs)
    for row, generator in zip(noise, generators, strict=True):
        row.exponential_(generator=generator)
    winner, token = (probs / noise).max(dim=-1)
    # The one read. A NaN winner is rare: NaN logits, logits / T overflowed (T near 0), or 0/0 (E_i = 0 = p_i).
    if any(math.isnan(w) for w in winner.tolist()):
        if logits.isnan().any():
            raise TinyLLMError("the model's logits are NaN: its weights are broken (a run that diverged?); "
                               "sample from another checkpoint")
        # Otherwise those rows take the limit T -> 0: greedy.
        token = torch.where(winner.isnan(), logits.argmax(dim=-1), token)
    return token


def make_generators(seed: int | None, n: int, device: torch.device) -> list[torch.Generator]:
    """Sample i draws from its own generator seeded ``seed + i`` (never the global RNG)."""
    gens = []
    for i in range(n):
        g = torch.Generator(device=device)
        if seed is None:
            g.seed()
        else:
            g.manual_seed(seed + i)
        gens.append(g)
    return gens


@torch.inference_mode()
def generate_tokens(
    model: GPT,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    kv_cache: bool = True,
    decoder: Callable[[Tensor, KVCache], Tensor] | None = None,
) -> Iterator[Tensor]:
    """Yield the next token of every sequence (a (B,) tensor), ``max_new_tokens`` times.

    ``prompt`` is (B, T) token ids on the model's device. The model is used as
    it is; call ``model.eval()`` first (the CLI and callbacks do). ``decoder``
    (see :func:`compile_decoder`) replaces the model for the one-token cached
    steps only; prefill and recompute always run the model itself.
    """
    check_request(max_new_tokens, temperature, top_k, top_p)
    if prompt.dim() != 2 or prompt.size(1) == 0:
        raise TinyLLMError("the prompt is empty: give at least one token")
    block, keep = model.config.block_size, max(1, model.config.block_size // 2)
    generators = make_generators(seed, prompt.size(0), prompt.device)
    cache = model.new_cache(prompt.size(0)) if kv_cache else None
    decode = model if decoder is None else decoder
    tokens = prompt
    start = max(0, tokens.size(1) - block)  # the window is tokens[:, start:]
    prefill = True
    for _ in range(max_new_tokens):
        if tokens.size(1) - start > block:  # window full: keep its newest `keep` tokens
            start, prefill = tokens.size(1) - keep, True
        if cache is None:
            logits = model(tokens[:, start:])
        elif prefill:
            cache.reset()
            logits = model(tokens[:, start:], cache)
            prefill = False
        else:
            logits = decode(tokens[:, -1:], cache)
        next_token = sample_next(logits[:, -1], temperature, top_k, top_p, generators)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        yield next_token


def compile_decoder(model: GPT, batch_size: int = 1) -> Callable[[Tensor, KVCache], Tensor]:
    """The model's one-token decode step through ``torch.compile``, compiled now.

    A decode step is ~100 tiny operations around a few small matrix-vector
    products; run one by one, their Python and dispatch overhead costs more
    than their arithmetic. Compiling fuses them into a few kernels. The cache's
    length changes every step: torch compiles the first length it sees as a
    constant and the second as a symbol, so after the warm-up below one graph
    serves every length, while the preallocated cache buffers keep static shapes.
    (``dynamic=True`` makes their sizes symbols too, and checking those guards
    and gathering the inputs cost a tenth of a step, DEVLOG.md.) Prefill and
    recompute stay eager. Compiling takes tens of seconds the first
    time (torch caches part of the work on disk for the next run), so it pays
    off for long generations, not for a short sample. ``batch_size`` is part of
    the graphs: generating another batch size compiles them again, on the spot.

    The decoder is for this model as it is now. It reads the weights at every
    step (changed in place, they are seen), but it checks only what a step is
    given (the tokens, the cache, grad mode and autocast), not the model's
    modules or the globals they use: a later ``model.train()``, a forward hook,
    a swapped layer or a changed setting goes unseen by it. Compile a new one
    after changing the model.
    """
    device, block = model.embed_tokens.weight.device, model.config.block_size
    options = {
        # On the CPU, a C++ wrapper around the kernels also removes the Python between them (~20% on a 2-core AMD EPYC).
        "cpp_wrapper": device.type == "cpu",
        # The model is fixed while it decodes. Before each call torch checks that nothing the graph was traced
        # from has changed: ~1,000 checks on the modules and their globals, ~8% of a step on a 2-core Xeon.
        "guard_filter_fn": _guards_on_the_inputs_only,
        # Inductor's inference-only passes: another ~5% there, side by side (DEVLOG.md).
        "freezing": True,
        # Inductor's own checks, at every call, that the inputs and its kernels' outputs have the sizes and strides
        # it compiled for: 164 checks a step, ~5% of decoding there. The guards check the inputs already; the
        # kernels' outputs go unchecked (a test compares the compiled step with eager, on the torch installed).
        "size_asserts": False,
    }
    share_products(model)  # int8 layers with one input: one product each group
    compiled = torch.compile(_step_of_its_own(model), options=options)
    try:
        # Warm up inside inference mode (as generation runs) on every shape that gets its own graph, each one
        # graph: a break would compile GPT.forward's own frames, which every model shares (see below).
        with torch.inference_mode(), error_on_graph_break():
            cache = model.new_cache(batch_size)
            # Length 1 (a constant), 2 (now a symbol) and the last slot; block_size 1 never decodes.
            for prefill in sorted({p for p in (1, 2, block - 1) if 1 <= p < block}):
                cache.reset()
                tokens = torch.zeros(batch_size, prefill + 1, dtype=torch.long, device=device)
                model(tokens[:, :prefill], cache)
                compiled(tokens[:, -1:], cache)
    except Exception as e:  # compilation needs a working C++ compiler (CPU) or Triton (CUDA)
        cause = getattr(e, "inner_exception", None) or e  # dynamo wraps the backend's own error
        first_line = next((line for line in str(cause).splitlines() if line.strip()), "")
        raise TinyLLMError(f"torch.compile failed on {device} ({type(cause).__name__}: {first_line}): "
                           "run without --compile") from None
    return compiled


def _step_of_its_own(model: GPT) -> Callable[[Tensor, KVCache], Tensor]:
    """``model(idx, cache)`` as a function with a code object of its own.

    torch keeps compiled graphs per code object, and ``GPT.forward``'s is every
    model's: with the guards above, two models with caches of one shape would
    run each other's graphs. Each decoder's graphs stay with its own function
    instead. (torch.compile's ``isolate_recompiles=True`` does the same, at
    ~2.5% of a step on a 2-core Xeon, DEVLOG.md.)
    """

    def step(idx: Tensor, cache: KVCache) -> Tensor:
        return model(idx, cache)

    step.__code__ = step.__code__.replace()  # a copy: a new code object, never shared with another decoder
    return step


def _guards_on_the_inputs_only(entries: list) -> list[bool]:
    """Keep a guard unless it is on an ``nn.Module`` or a global (torch's own filters, combined)."""
    on_modules = torch.compiler.skip_guard_on_all_nn_modules_unsafe(entries)
    on_globals = torch.compiler.skip_guard_on_globals_unsafe(entries)
    return [a and b for a, b in zip(on_modules, on_globals)]


Quantize = Literal["none", "int8"]  # the decoding weights: as trained, or weight-only int8 (CPU)


def prepare_decoding(
    model: GPT, quantize: Quantize = "none", compile: bool = False, batch_size: int = 1
) -> Callable[[Tensor, KVCache], Tensor] | None:
    """Apply the fast-decoding levers: int8 weights (in place, CPU only) and a compiled decode step.

    Returns the ``decoder`` for :func:`generate_tokens` (None: the model itself).
    """
    if quantize == "int8":
        if model.embed_tokens.weight.device.type != "cpu":
            raise TinyLLMError("--quantize int8 is for the CPU (a GPU is faster in fp16): add --device cpu or drop it")
        quantize_int8(model)
    return compile_decoder(model, batch_size) if compile else None


@dataclass
class Generation:
    """Generated token ids per sample, and how fast they came."""

    tokens: list[list[int]]
    seconds: float
    first_token_seconds: float
    texts: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return sum(len(t) for t in self.tokens) / self.seconds if self.seconds > 0 else float("inf")


def generate(
    model: GPT,
    prompt_ids: list[int],
    max_new_tokens: int,
    num_samples: int = 1,
    decode: Callable[[list[int]], str] | None = None,
    stop: str | None = None,
    on_text: Callable[[str], None] | None = None,
    **sampling,
) -> Generation:
    """Generate ``num_samples`` continuations of ``prompt_ids`` as one batch.

    With ``decode``, texts are decoded; ``stop`` ends a sample at the first
    occurrence of that string (the string itself is cut off) and generation
    when every sample has hit it; ``on_text`` receives sample 0's new text as
    it arrives (streaming).
    """
    if num_samples < 1:
        raise TinyLLMError(f"num_samples must be at least 1, got {num_samples}")
    if not prompt_ids:
        raise TinyLLMError("the prompt is empty: give at least one character")
    if (stop or on_text) and decode is None:
        raise TinyLLMError("stop strings and streaming need a decode function")
    device = model.embed_tokens.weight.device
    prompt = torch.tensor([prompt_ids] * num_samples, dtype=torch.long, device=device)
    out: list[list[int]] = [[] for _ in range(num_samples)]
    streamer = _Streamer(decode, on_text, stop) if on_text else None
    t0 = time.perf_counter()
    first = 0.0
    for next_token in generate_tokens(model, prompt, max_new_tokens, **sampling):
        for row, tok in zip(out, next_token.tolist()):
            row.append(tok)
        if not first:
            first = time.perf_counter() - t0
        if streamer:
            streamer.push(out[0])
        if stop and all(stop in decode(row) for row in out):
            break
    seconds = time.perf_counter() - t0
    texts = [decode(row) for row in out] if decode else []
    if stop:
        texts = [t.split(stop, 1)[0] for t in texts]
    if streamer:
        streamer.finish(texts[0])
    return Generation(out, seconds, first, texts)


class _Streamer:
    """Emits sample 0's text as tokens arrive, never past a stop string.

    It holds back a partly decoded UTF-8 character (BPE tokens can split one)
    and the last ``len(stop) - 1`` characters, which might begin the stop string.
    """

    def __init__(self, decode: Callable[[list[int]], str], emit: Callable[[str], None], stop: str | None) -> None:
        self.decode, self.emit, self.stop, self.shown = decode, emit, stop, 0

    def _emit_upto(self, text: str) -> None:
        if len(text) > self.shown:
            self.emit(text[self.shown :])
            self.shown = len(text)

    def push(self, ids: list[int]) -> None:
        text = self.decode(ids).rstrip("\ufffd")
        if self.stop:
            cut = text.find(self.stop)
            text = text[:cut] if cut >= 0 else text[: max(0, len(text) - len(self.stop) + 1)]
        self._emit_upto(text)

    def finish(self, final: str) -> None:
        self._emit_upto(final)


DEVICE_TYPES = ("cpu", "cuda", "mps")  # what tinyllm runs a model on


def pick_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA, else Apple's MPS, else the CPU; anything else must name an available device."""
    if requested != "auto":
        choices = f"use auto, {', '.join(DEVICE_TYPES[:-1])} or {DEVICE_TYPES[-1]}"
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise TinyLLMError(f"--device {requested!r} is not a device: {choices}") from None
        if device.type not in DEVICE_TYPES:
            raise TinyLLMError(f"--device {requested!r} cannot run a model here: {choices}")
        if (device.type == "cuda" and not torch.cuda.is_available()) or (
            device.type == "mps" and not torch.backends.mps.is_available()
        ):
            raise TinyLLMError(f"--device {requested} is not available on this machine: use auto or cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
