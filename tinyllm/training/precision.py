"""Pick the numeric precision for the device, once, at start-up: by the table where there is no choice, by
measurement where there is.

| device                       | precision          | why                                                  |
|------------------------------|--------------------|------------------------------------------------------|
| CUDA with bf16 (Ampere+)     | bf16-mixed         | fast tensor cores, fp32 range, no loss scaling       |
| CUDA without bf16 (T4)       | 16-mixed           | fp16 tensor cores; a GradScaler prevents underflow   |
| Apple MPS                    | 32-true            | float16 diverged there in the original project       |
| CPU with bf16 instructions   | measured           | bf16 matmuls can be 6x faster (AMX) or slower overall |
| other CPUs                   | 32-true            | bf16 is emulated: about 4x slower (measured)         |

A CPU that advertises bf16 (AMX or AVX512-BF16) does not always train faster in
bf16-mixed: autocast casts every weight on every step, norms and the optimizer
stay fp32, and small matmuls gain little. So there a short probe times a few
training steps of *this* model at *this* batch in both precisions and keeps the
faster; the answer is cached per machine, model shape and batch
(``$TINYLLM_CACHE_DIR/precision.json``, else ``~/.cache/tinyllm``) and printed.
An explicit ``--trainer.precision`` always wins.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from tinyllm.core.config import GPTConfig
from tinyllm.core.generate import pick_device
from tinyllm.files import atomic_write_bytes, cache_dirs
from tinyllm.training.module import GPTLitModule, optimizer_step

Probe = Callable[[str], float]  # precision -> seconds per training step


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 matrix instructions (AMX or AVX512-BF16, Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_name() -> str:
    """The CPU's model name (``AMD EPYC 9B14``), for the probe cache and for the figures we print."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def detect_device(accelerator: str = "auto") -> str:
    """The device type Lightning's ``accelerator`` setting will end up on (the rule is ``pick_device``'s)."""
    if accelerator not in ("auto", "gpu"):
        return accelerator
    found = pick_device("auto").type  # CUDA, else Apple's MPS, else the CPU
    return "mps" if accelerator == "gpu" and found == "cpu" else found


def choose_precision(
    accelerator: str = "auto", probe: Probe | None = None, cache_key: str | None = None
) -> tuple[str, str]:
    """(precision, reason) for the device ``accelerator`` resolves to.

    On a bf16-capable CPU, ``probe`` (seconds per step for a precision) decides,
    remembered under ``cache_key``; without a probe the table's guess stands.
    """
    device = detect_device(accelerator)
    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", "CUDA GPU with bf16 support"
        return "16-mixed", "CUDA GPU without bf16 (e.g. a T4): float16 with gradient scaling"
    if device == "mps":
        return "32-true", "Apple GPU: float16 training diverged on MPS"
    if device == "cpu" and cpu_has_native_bf16():
        if probe is None:
            return "bf16-mixed", "CPU with native bf16 matrix instructions (not measured)"
        return measured_choice(("32-true", "bf16-mixed"), probe, cache_key or "")
    return "32-true", f"{device.upper()} without native bf16: bf16 would be emulated and slower"


def measured_choice(candidates: tuple[str, ...], probe: Probe, cache_key: str) -> tuple[str, str]:
    """The candidate with the fewest seconds per step, measured now or remembered from an earlier run."""
    cache = _cache_file()
    known = _read_cache(cache)
    seconds = known.get(cache_key)
    where = "cached"
    if not isinstance(seconds, dict) or set(seconds) != set(candidates):
        seconds = {p: probe(p) for p in candidates}
        known[cache_key] = seconds
        try:
            atomic_write_bytes(cache, json.dumps(known, indent=1).encode())
            where = f"measured now, cached in {cache}"
        except OSError:
            where = "measured now"
    best = min(candidates, key=seconds.get)
    # Three significant digits: a tiny model's steps take milliseconds, and 0.007 against 0.007 hid the winner.
    timings = ", ".join(f"{p} {seconds[p]:#.3g} s/step" for p in candidates)
    return best, f"fastest on this CPU for this model and batch: {timings} ({where})"


def _cache_file() -> Path:
    return cache_dirs()[0] / "precision.json"


def _read_cache(path: Path) -> dict:
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


# Bump when the model's kernels or the timed step change what a step costs, so cached answers are measured
# again (2: bf16 attention by the formula, faster dropout; 3: the module's own step and optimizer;
# 4: dropout masks from 16-bit draws; 5: dropout's scale in its mask, the causal mask filled in place;
# 6: the mask written in x's dtype, the causal mask added, freed memory kept; 7: the causal mask made once;
# 8: dropout masks from bytes, scaled in the kernels that read them, and RoPE half by half).
PROBE_VERSION = 8


def probe_key(config: GPTConfig, batch_size: int) -> str:
    """What the probe's answer depends on: the machine, torch, threads, the model (shape, dropout), the batch."""
    c = config
    shape = (f"{c.n_layer}x{c.n_head}x{c.n_embd} T{c.block_size} V{c.vocab_size} "
             f"{c.norm}/{c.mlp}/{c.pos_emb}/{c.attention}")
    return (f"{cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {shape} "
            f"| dropout {c.dropout} | batch {batch_size} | probe {PROBE_VERSION}")  # fmt: skip


def training_step_probe(module: GPTLitModule, batch_size: int, steps: int = 3, warmup: int = 2) -> Probe:
    """A probe that times ``steps`` training steps (after ``warmup``) of ``module``'s own step at ``batch_size``,
    on the CPU.

    A step is :func:`tinyllm.training.module.optimizer_step`, what Lightning runs:
    forward and loss under autocast (for bf16-mixed), backward, the run's
    optimizer. It trains a fresh copy, so the run's weights are untouched; the
    median step time is returned. Warm-up steps absorb one-off costs (oneDNN
    picks and JIT-compiles its bf16 kernels on the first steps).
    """

    def seconds_per_step(precision: str) -> float:
        # The run seeds its RNG before this: the probe must leave it untouched, or a run that probes would
        # initialise other weights than the same run with the answer cached.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return _median_step_seconds(module.fresh_copy().train(), batch_size, precision, steps, warmup)

    return seconds_per_step


def _median_step_seconds(module: GPTLitModule, batch_size: int, precision: str, steps: int, warmup: int) -> float:
    """The median time of ``steps`` training steps after ``warmup``, on random tokens."""
    config = module.model.config
    optimizers = module.optimizers_for(max_steps=warmup + steps)
    x = torch.randint(0, config.vocab_size, (batch_size, config.block_size))
    times = []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        optimizer_step(module, [(x, x)], optimizers, precision, clip=None)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[warmup:])
