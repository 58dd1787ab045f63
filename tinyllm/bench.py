"""``python -m tinyllm bench generate``: measured speed, printed (and optionally saved as JSON).

Speed claims in tinyllm come from here, never from timed unit tests. Run one
benchmark at a time on an otherwise idle machine.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from tinyllm.errors import TinyLLMError, one_line


def _model_for_bench(ckpt_path: str | None, preset: str, device: torch.device):
    from tinyllm import GPT, GPTConfig
    from tinyllm.checkpoint import load_model

    if ckpt_path:
        loaded = load_model(ckpt_path, device)
        return loaded.model, f"checkpoint {loaded.path}"
    torch.manual_seed(0)
    return GPT(GPTConfig.preset(preset, dropout=0.0)).to(device).eval(), f"preset {preset} (random weights)"


def bench_generate(
    model, lengths: list[int], prompt_len: int = 6, repeats: int = 1, recompute: bool = True
) -> list[dict[str, Any]]:
    """tokens/s with and without the KV cache, and time to first token, at each length (batch 1)."""
    from tinyllm.generate import generate

    prompt = [i % model.config.vocab_size for i in range(prompt_len)]
    generate(model, prompt, 20, temperature=0)  # warm-up: allocator, kernels, caches
    rows = []
    for n in lengths:
        row: dict[str, Any] = {"new_tokens": n}
        for kv in (True, False) if recompute else (True,):
            runs = [generate(model, prompt, n, temperature=0.8, top_k=200, seed=1, kv_cache=kv) for _ in range(repeats)]
            best = min(runs, key=lambda g: g.seconds)
            key = "cached" if kv else "recompute"
            row[f"{key}_tokens_per_s"] = round(n / best.seconds, 1)
            row[f"{key}_first_token_ms"] = round(best.first_token_seconds * 1000, 2)
        if recompute:
            row["speedup"] = round(row["cached_tokens_per_s"] / row["recompute_tokens_per_s"], 2)
        rows.append(row)
    return rows


def _environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main(argv: list[str]) -> None:
    from jsonargparse import ArgumentError, ArgumentParser

    from tinyllm.generate import pick_device

    p = ArgumentParser(prog="python -m tinyllm bench", exit_on_error=False,
                       description="Measure generation speed (bench generate).")
    p.add_argument("what", choices=["generate"])
    p.add_argument("--ckpt_path", type=str | None, default=None, help="benchmark this checkpoint ...")
    p.add_argument("--preset", type=str, default="modern", help="... or a randomly initialised preset")
    p.add_argument("--lengths", type=list[int], default=[100, 500, 1000])
    p.add_argument("--repeats", type=int, default=1, help="runs per setting; the fastest is reported")
    p.add_argument("--recompute", type=bool, default=True, help="also time generation without the cache")
    p.add_argument("--device", type=str, default="auto")
    p.add_argument("--json", type=str | None, default=None, help="also write the figures to this file")
    try:
        args = p.parse_args(argv)
    except ArgumentError as e:
        raise TinyLLMError(one_line(str(e))) from None
    model, source = _model_for_bench(args.ckpt_path, args.preset, pick_device(args.device))
    print(f"bench generate: {source}, {model.num_parameters():,} parameters, batch 1, "
          f"{torch.get_num_threads()} threads, {next(model.parameters()).device}")
    rows = bench_generate(model, args.lengths, repeats=args.repeats, recompute=args.recompute)
    header = f"{'new tokens':>10} {'cached tok/s':>13} {'recompute tok/s':>16} {'speedup':>8} {'TTFT cached':>12}"
    print(header)
    for r in rows:
        print(f"{r['new_tokens']:>10} {r['cached_tokens_per_s']:>13.1f} {r.get('recompute_tokens_per_s', float('nan')):>16.1f} "
              f"{r.get('speedup', float('nan')):>7.1f}x {r['cached_first_token_ms']:>10.1f}ms")
    if args.json:
        out = {"benchmark": "generate", "model": source, "parameters": model.num_parameters(),
               "environment": _environment(), "results": rows}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
