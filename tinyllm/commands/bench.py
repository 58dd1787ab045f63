"""Measure speed: decoding (``bench generate``) and training (``bench train``), printed and optionally saved as JSON.

Speed claims in tinyllm come from here, never from timed unit tests. Run one
benchmark at a time on an otherwise idle machine.
"""

from __future__ import annotations

import copy
from json import dumps
import platform
import resource
import statistics
import time
from collections import Counter
from typing import Any, Callable, Literal

import lightning as L
import torch
from torch import Tensor, nn

from tinyllm.core.defaults import TEMPERATURE, TOP_K
from tinyllm.core.generate import Quantize, generate, pick_device, prepare_decoding
from tinyllm.core.model import GPT, KVCache
from tinyllm.errors import TinyLLMError
from tinyllm.files import check_writable_folder, user_path
from tinyllm.formats.load import load_model
from tinyllm.training.callbacks import compute_dtype
from tinyllm.training.cli import build_cli
from tinyllm.training.module import GPTLitModule, optimizer_step


def _model_for_bench(ckpt_path: str | None, config: str, device: torch.device) -> tuple[GPT, str]:
    if ckpt_path:
        loaded = load_model(ckpt_path, device)
        return loaded.model, f"checkpoint {loaded.path}"
    torch.manual_seed(0)
    # The config's architecture, with the vocabulary of its data.
    model = build_cli(["--config", config], run=False).model.model
    return model.to(device).eval(), f"{config} (random weights)"


# name -> (quantize, compile): the levers of fast decoding, one at a time
GENERATE_SETUPS: dict[str, tuple[Quantize, bool]] = {"fp32": ("none", False), "int8": ("int8", False),
                                                     "int8+compile": ("int8", True)}  # fmt: skip
GenerateSetup = Literal[tuple(GENERATE_SETUPS)]  # type: ignore[valid-type]  # --help lists the choices from it


def time_generation(
    model: GPT, lengths: list[int], prompt_len: int = 6, repeats: int = 1, recompute: bool = True,
    decoder: Callable[[Tensor, KVCache], Tensor] | None = None,
) -> list[dict[str, Any]]:
    """tokens/s with and without the KV cache, and time to first token, at each length (batch 1)."""
    prompt = [i % model.config.vocab_size for i in range(prompt_len)]
    generate(model, prompt, 20, temperature=0, decoder=decoder)  # warm-up: allocator, kernels, caches
    rows = []
    for n in lengths:
        row: dict[str, Any] = {"new_tokens": n}
        for kv in (True, False) if recompute else (True,):
            runs = [generate(model, prompt, n, temperature=TEMPERATURE, top_k=TOP_K, seed=1, kv_cache=kv,
                             decoder=decoder)
                    for _ in range(repeats)]
            best = min(runs, key=lambda g: g.seconds)
            key = "cached" if kv else "recompute"
            row[f"{key}_tokens_per_s"] = round(n / best.seconds, 1)
            row[f"{key}_first_token_ms"] = round(best.first_token_seconds * 1000, 2)
        if recompute:
            row["speedup"] = round(row["cached_tokens_per_s"] / row["recompute_tokens_per_s"], 2)
        rows.append(row)
    return rows


def run_bench_generate(
    model: GPT, setups: list[str], lengths: list[int], repeats: int, recompute: bool
) -> list[dict[str, Any]]:
    """Every setup of ``GENERATE_SETUPS`` on its own copy of ``model``; rows carry the setup's name."""
    rows = []
    for name in setups:
        quantize, compile_ = GENERATE_SETUPS[name]
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        decoder = prepare_decoding(m, quantize, compile_)
        compile_s = time.perf_counter() - t0  # quantizing takes milliseconds; compiling, seconds
        for row in time_generation(m, lengths, repeats=repeats, recompute=recompute, decoder=decoder):
            rows.append({"setup": name, **row, **({"compile_s": round(compile_s, 1)} if compile_ else {})})
    return rows


def _print_generate(rows: list[dict[str, Any]]) -> None:
    print(f"{'setup':>13} {'new tokens':>10} {'cached tok/s':>13} {'recompute tok/s':>16} {'speedup':>8} "
          f"{'TTFT cached':>12}")
    for r in rows:
        # Without --recompute the recompute columns were not measured: a dash, not a number.
        recompute = f"{r['recompute_tokens_per_s']:>16.1f}" if "recompute_tokens_per_s" in r else f"{'-':>16}"
        speedup = f"{r['speedup']:>7.1f}x" if "speedup" in r else f"{'-':>8}"
        print(f"{r['setup']:>13} {r['new_tokens']:>10} {r['cached_tokens_per_s']:>13.1f} {recompute} {speedup} "
              f"{r['cached_first_token_ms']:>10.1f}ms")
    compiled = {r["setup"]: r["compile_s"] for r in rows if "compile_s" in r}
    for name, seconds in compiled.items():
        print(f"{name}: compiling the decode step took {seconds:.1f} s (once per process; not in TTFT); "
              "recompute runs the model eagerly")


# ----------------------------------------------------------------------------- training


def matmul_peak_flops(
    dtype: torch.dtype = torch.float32,
    sizes: tuple[int, ...] = (1024, 2048, 4096),
    repeats: int = 5,
    spin_s: float = 1.0,
) -> float:
    """This CPU's matrix-multiply FLOP/s in ``dtype``, measured now: the best n×n product (2n³ FLOPs) over a few sizes.

    A second of products first lets the cores reach their sustained clock, so the figure does not
    depend on what ran before.
    """
    a = torch.randn(2048, 2048, dtype=dtype)
    end = time.perf_counter() + spin_s
    while time.perf_counter() < end:
        a @ a
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up
        best = max(best, 2 * n**3 / min(_timed(lambda: a @ b) for _ in range(repeats)))
    return best


def linear_shapes(model: nn.Module) -> Counter[tuple[int, int]]:
    """(in_features, out_features) -> how many of ``model``'s linear layers have that shape."""
    return Counter((m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear))


def linear_layers_flops(model: nn.Module, rows: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """FLOP/s of ``model``'s linear layers alone, forward and backward, on ``rows`` tokens in ``dtype``.

    Each shape runs on its own, as a training step runs it (fp32 weights, under bf16 autocast for bf16):
    y = x Wᵀ and both gradients, 6 · rows · in · out FLOPs, weighted by how many layers have that shape.
    These products hold most of a step's FLOPs (attention's score products, about a tenth, are left
    out); the rest of the step (norms, softmax, dropout, the optimizer) adds time and few FLOPs. So this
    rate over the matmul peak is about the MFU a step of this model would reach if everything else took
    no time. NaN for a model without linear layers.
    """
    flops = seconds = 0.0
    for (n_in, n_out), count in linear_shapes(model).items():
        layer, x = nn.Linear(n_in, n_out, bias=False), torch.randn(rows, n_in, requires_grad=True)

        def step() -> None:
            with torch.autocast("cpu", torch.bfloat16, enabled=dtype == torch.bfloat16):
                y = layer(x)
            y.backward(torch.ones_like(y))

        step()  # warm-up
        flops += count * 6 * rows * n_in * n_out
        seconds += count * statistics.median(_timed(step) for _ in range(repeats))
    return flops / seconds if seconds else float("nan")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _stamp() -> tuple[float, float, float]:
    """The wall clock and this process's user and system CPU seconds, now (to the microsecond, not
    ``os.times()``'s 10 ms ticks: a small model's few measured steps can take less than a tick)."""
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), cpu.ru_utime, cpu.ru_stime


def _intervals(stamps: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """(wall, user, system) seconds between consecutive stamps: one row per step."""
    return [(b[0] - a[0], b[1] - a[1], b[2] - a[2]) for a, b in zip(stamps[:-1], stamps[1:])]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench_plain_loop(
    lit: GPTLitModule, datamodule, steps: int, warmup: int, accumulate: int, clip: float | None,
    precision: str = "32-true",
) -> list[tuple[float, float, float]]:
    """The run's own training step (``module.optimizer_step``) as a plain PyTorch loop: (wall, user, system)
    seconds of each optimizer step after the warm-up."""
    module = lit.fresh_copy().train()
    optimizers = module.optimizers_for(max_steps=warmup + steps)  # the run's optimizer and schedule, step-defined
    batches = iter(datamodule.train_dataloader())
    stamps = [_stamp()]
    for _ in range(warmup + steps):
        optimizer_step(module, [next(batches) for _ in range(accumulate)], optimizers, precision, clip)
        stamps.append(_stamp())
    return _intervals(stamps)[warmup:]


def bench_lightning(lit, datamodule, trainer_cfg, steps: int, warmup: int) -> list[tuple[float, float, float]]:
    """(wall, user, system) seconds of each optimizer step of ``Trainer.fit`` after the warm-up, with the config's
    precision, accumulation and clipping."""
    class StepTimes(L.Callback):
        def __init__(self) -> None:
            self.stamps: list[tuple[float, float, float]] = []

        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            if len(self.stamps) < trainer.global_step + 1:  # an optimizer step just finished
                self.stamps.append(_stamp())

        def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
            self.stamps = [_stamp()]

    timer = StepTimes()
    trainer = L.Trainer(
        max_steps=warmup + steps, max_epochs=-1, accumulate_grad_batches=trainer_cfg["accumulate"],
        gradient_clip_val=trainer_cfg["clip"], precision=trainer_cfg["precision"], accelerator="cpu",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer],
    )
    trainer.fit(lit, datamodule=datamodule)
    return _intervals(timer.stamps)[warmup:]


def _environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def run_bench_train(config_args: list[str], steps: int, warmup: int, rounds: int = 2) -> dict[str, Any]:
    """Plain PyTorch loop vs Lightning on the same config, on the CPU, in the precision the run would use: tokens/s,
    step time, MFU against that precision's matmul peak, peak memory, and Lightning's overhead over the plain loop."""
    cli = build_cli(config_args, run=False)  # chooses the precision as `fit` would (measured, or --trainer.precision)
    lit, datamodule, trainer = cli.model, cli.datamodule, cli.trainer
    datamodule.prepare_data()
    datamodule.setup("fit")
    precision = str(cli.config.trainer.precision)
    if precision not in ("32-true", "bf16-mixed"):
        raise TinyLLMError(f"bench train measures the CPU in 32-true or bf16-mixed, not {precision}: pass --set "
                           '["--trainer.precision=32-true"]')  # fmt: skip
    # Both loops run the same arithmetic; MFU is against the matmul peak of that arithmetic's dtype.
    cfg = {"accumulate": trainer.accumulate_grad_batches, "clip": trainer.gradient_clip_val, "precision": precision}
    tokens_per_step = datamodule.batch_size * datamodule.block_size * cfg["accumulate"]
    dtype = compute_dtype(precision)
    peak = matmul_peak_flops(dtype)
    # Alternate the two loops (plain, Lightning, plain, …) so neither always pays the first-touch costs;
    # each loop's figure is its best round's median step time.
    runs: dict[str, list[list[tuple[float, float, float]]]] = {"plain": [], "lightning": []}
    for _ in range(rounds):
        plain = bench_plain_loop(lit, datamodule, steps, warmup, cfg["accumulate"], cfg["clip"], precision)
        runs["plain"].append(plain)
        runs["lightning"].append(bench_lightning(lit.fresh_copy(), datamodule, cfg, steps, warmup))
    # A shared machine's speed drifts: the peak is measured before and after the loops, and the higher one
    # kept, so that MFU is never flattered by a slow moment of the peak's measurement.
    peak = max(peak, matmul_peak_flops(dtype))
    linear = linear_layers_flops(lit.model, datamodule.batch_size * datamodule.block_size, dtype)
    flops_per_step = lit.model.flops_per_token() * tokens_per_step
    row = {"config": " ".join(config_args), "parameters": lit.model.num_parameters(),
           "flops_per_token": lit.model.flops_per_token(), "tokens_per_step": tokens_per_step,
           "precision": cfg["precision"], "matmul_peak_gflops": round(peak / 1e9, 1)}
    for name, loop_rounds in runs.items():
        seconds = min(statistics.median(wall for wall, _, _ in measured) for measured in loop_rounds)
        row[f"{name}_step_s"] = round(seconds, 6)
        row[f"{name}_tokens_per_s"] = round(tokens_per_step / seconds, 1)
        row[f"{name}_mfu"] = round(flops_per_step / seconds / peak, 4)
        # Over the measured steps only: the warm-up's compiling and first touches are not a step's cost.
        every_step = [step for measured in loop_rounds for step in measured]
        user, system = sum(s[1] for s in every_step), sum(s[2] for s in every_step)  # system: page faults mostly
        row[f"{name}_system_cpu_share"] = round(system / (user + system), 3) if user + system > 0 else None
    row["lightning_overhead"] = round(row["lightning_step_s"] / row["plain_step_s"] - 1, 4)
    row["linear_layers_gflops"] = round(linear / 1e9, 1)  # the linear layers' own rate at the step's shapes
    row["linear_layers_share_of_peak"] = round(linear / peak, 4)
    row["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return row


def _print_train(row: dict[str, Any]) -> None:
    print(f"bench train: {row['config']} | {row['parameters']:,} parameters, {row['tokens_per_step']:,} tokens/step, "
          f"{row['precision']}, matmul peak {row['matmul_peak_gflops']} GFLOP/s (the higher of two measured now)")
    for name in ("plain", "lightning"):
        print(f"  {name:>9}: {row[f'{name}_step_s']:.3f} s/step  {row[f'{name}_tokens_per_s']:>9,.0f} tokens/s  "
              f"MFU {row[f'{name}_mfu']:.1%}  system CPU {row[f'{name}_system_cpu_share'] or 0:.0%}")
    print(f"  the linear layers alone, forward and backward at this step's shapes: {row['linear_layers_gflops']} "
          f"GFLOP/s, {row['linear_layers_share_of_peak']:.1%} of the peak (about the MFU a step would reach if "
          "nothing else took time)")
    print(f"  Lightning overhead {row['lightning_overhead']:+.1%}, peak resident memory {row['peak_rss_mb']:,.0f} MB")


def bench_generate(
    ckpt_path: str | None = None,
    config: str = "configs/modern.yaml",
    lengths: list[int] = [100, 500, 1000],
    repeats: int = 1,
    recompute: bool = True,
    setups: list[GenerateSetup] = list(GENERATE_SETUPS),
    device: str = "auto",
    json: str | None = None,
) -> None:
    """Decoding speed: tokens/s with the KV cache and without, time to first token, per setup.

    Args:
        ckpt_path: benchmark this checkpoint or exported folder ...
        config: ... or a randomly initialised model of this config's architecture (configs/vanilla.yaml, ...).
        lengths: new tokens per run.
        repeats: runs per setting; the fastest is reported.
        recompute: also time generation without the cache.
        setups: fp32 (as trained), int8 (weight-only), int8+compile (torch.compile'd decode step).
        device: auto, cpu, cuda or mps.
        json: also write the figures to this JSON file.
    """
    _check_at_least(1, repeats=repeats)
    _check_json(json)
    model, source = _model_for_bench(ckpt_path, config, pick_device(device))
    print(f"bench generate: {source}, {model.num_parameters():,} parameters, batch 1, "
          f"{torch.get_num_threads()} threads, {next(model.parameters()).device}")  # fmt: skip
    rows = run_bench_generate(model, setups, lengths, repeats, recompute)
    _print_generate(rows)
    _write_json(json, {"benchmark": "generate", "model": source, "parameters": model.num_parameters(),
                           "environment": _environment(), "results": rows})  # fmt: skip


def bench_train(
    config: str, set: list[str] = [], steps: int = 5, warmup: int = 2, rounds: int = 2, json: str | None = None
) -> None:
    """Training speed: a plain PyTorch loop against Lightning on one config, with MFU against a peak measured now.

    Args:
        config: the YAML config, as for fit (e.g. configs/modern.yaml).
        set: overrides as fit takes them, e.g. ["--data.batch_size=16"].
        steps: measured optimizer steps (after warm-up).
        warmup: optimizer steps not measured.
        rounds: alternating rounds of the plain loop and Lightning; each reports its best.
        json: also write the figures to this JSON file.
    """
    _check_at_least(1, steps=steps, rounds=rounds)
    _check_at_least(0, warmup=warmup)
    _check_json(json)
    row = run_bench_train(["--config", config, *set], steps, warmup, rounds)
    _print_train(row)
    _write_json(json, {"benchmark": "train", "environment": _environment(), "results": [row]})


def _check_at_least(minimum: int, **counts: int) -> None:
    """One line for a count below its minimum, before any work: a benchmark of no runs has no figures."""
    for name, value in counts.items():
        if value < minimum:
            raise TinyLLMError(f"--{name} must be at least {minimum}, got {value}")


def _check_json(path: str | None) -> None:
    """Refuse a --json the OS will not take before the benchmark, not after it."""
    if path:
        check_writable_folder(user_path(path).parent, "--json")


def _write_json(path: str | None, figures: dict[str, Any]) -> None:
    if path:
        where = user_path(path)
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(dumps(figures, indent=2) + "\n")
        print(f"wrote {where}")
