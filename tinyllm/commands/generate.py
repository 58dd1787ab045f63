"""``python -m tinyllm generate``: sample text from a checkpoint or an exported folder."""

from __future__ import annotations

import sys

from tinyllm.core.defaults import PROMPT, SEED, TEMPERATURE, TOP_K, check_seed
from tinyllm.core.generate import generate as generate_text
from tinyllm.core.generate import Quantize, check_request, pick_device, prepare_decoding
from tinyllm.errors import TinyLLMError
from tinyllm.formats.load import load_model

# The original project's five settings, shown side by side by --demo.
DEMO_SETTINGS = [
    ("temperature 0.5", dict(temperature=0.5)),
    ("temperature 0.8", dict(temperature=0.8)),
    ("temperature 1.0", dict(temperature=1.0)),
    ("temperature 1.0, top-k 50", dict(temperature=1.0, top_k=50)),
    ("temperature 1.0, top-p 0.9", dict(temperature=1.0, top_p=0.9)),
]


def generate(
    ckpt_path: str,
    prompt: str = PROMPT,
    max_new_tokens: int = 500,
    temperature: float = TEMPERATURE,
    top_k: int | None = TOP_K,
    top_p: float | None = None,
    seed: int | None = SEED,
    kv_cache: bool = True,
    num_samples: int = 1,
    stream: bool = True,
    stop: str | None = None,
    device: str = "auto",
    quantize: Quantize = "none",
    compile: bool = False,
    demo: bool = False,
) -> None:
    """Sample text from a checkpoint (KV cache, top-k/top-p, streaming, int8, compiled decoding).

    Args:
        ckpt_path: a .ckpt file, a run folder holding last.ckpt, or an exported folder.
        prompt: the text to continue.
        max_new_tokens: tokens to generate per sample.
        temperature: softmax temperature; 0 is greedy.
        top_k: sample among the k most likely tokens only (null: all).
        top_p: sample from the smallest set whose probability reaches p (null: off).
        seed: sample i draws from its own generator seeded seed + i (null: random).
        kv_cache: keep keys/values of past tokens instead of recomputing them.
        num_samples: samples generated side by side as one batch.
        stream: print tokens as they arrive (one sample only).
        stop: end a sample at this string.
        device: auto, cpu, cuda or mps.
        quantize: int8 (CPU): weight-only int8 linear layers, 4x fewer weight bytes per token.
        compile: torch.compile the cached decode step (tens of seconds once; for long generations).
        demo: the original project's five sampling settings, one after another.
    """
    check_request(max_new_tokens, temperature, top_k, top_p)  # before the prompt is printed
    if seed is not None:
        check_seed(seed, "--seed")
    if compile and not kv_cache:
        raise TinyLLMError("--compile speeds up the cached decode step: use it with --kv_cache true")
    loaded = load_model(ckpt_path, pick_device(device))
    tok = loaded.tokenizer
    prompt_ids = tok.encode(prompt)
    if not prompt_ids:
        raise TinyLLMError("the prompt is empty: give --prompt some text")
    decoder = prepare_decoding(loaded.model, quantize, compile, 1 if demo else num_samples)
    common = dict(decode=tok.decode, seed=seed, kv_cache=kv_cache, decoder=decoder)
    if demo:
        for title, sampling in DEMO_SETTINGS:
            g = generate_text(loaded.model, prompt_ids, max_new_tokens, **common, **sampling)
            print(f"=== {title} ({g.tokens_per_second:.0f} tokens/s) ===\n{prompt}{g.texts[0]}\n")
        return
    streaming = stream and num_samples == 1
    if streaming:
        print(prompt, end="", flush=True)
    g = generate_text(
        loaded.model, prompt_ids, max_new_tokens, num_samples=num_samples, stop=stop,
        on_text=(lambda s: print(s, end="", flush=True)) if streaming else None,
        temperature=temperature, top_k=top_k, top_p=top_p, **common,
    )  # fmt: skip
    if streaming:
        print()
    else:
        for i, text in enumerate(g.texts):
            header = f"--- sample {i + 1} ---\n" if num_samples > 1 else ""
            print(f"{header}{prompt}{text}")
    print(f"[{sum(map(len, g.tokens))} tokens in {g.seconds:.2f} s: {g.tokens_per_second:.0f} tokens/s, "
          f"first token after {g.first_token_seconds * 1000:.0f} ms, kv_cache={kv_cache}, "
          f"quantize={quantize}, compile={compile}]", file=sys.stderr)  # fmt: skip
