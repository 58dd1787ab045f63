"""Pick the numeric precision for the device, once, at start-up.

| device                     | precision    | why                                              |
|----------------------------|--------------|--------------------------------------------------|
| CUDA with bf16 (Ampere+)   | bf16-mixed   | fast tensor cores, fp32 range, no loss scaling   |
| CUDA without bf16 (T4)     | 16-mixed     | fp16 tensor cores; a GradScaler prevents underflow |
| Apple MPS                  | 32-true      | float16 diverged there in the original project   |
| CPU with native bf16 (AMX) | bf16-mixed   | hardware bf16 matmuls                            |
| other CPUs                 | 32-true      | bf16 is emulated: about 4x slower here (measured) |

An explicit ``--trainer.precision`` always wins over this table.
"""

from __future__ import annotations

from pathlib import Path

import torch


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 matrix instructions (AMX or AVX512-BF16, Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def detect_device(accelerator: str = "auto") -> str:
    """The device type Lightning's ``accelerator`` setting will end up on."""
    if accelerator not in ("auto", "gpu"):
        return accelerator
    if torch.cuda.is_available():
        return "cuda"
    if accelerator == "auto" and torch.backends.mps.is_available():
        return "mps"
    return "mps" if accelerator == "gpu" else "cpu"


def choose_precision(accelerator: str = "auto") -> tuple[str, str]:
    """(precision, reason) for the device ``accelerator`` resolves to."""
    device = detect_device(accelerator)
    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", "CUDA GPU with bf16 support"
        return "16-mixed", "CUDA GPU without bf16 (e.g. a T4): float16 with gradient scaling"
    if device == "mps":
        return "32-true", "Apple GPU: float16 training diverged on MPS"
    if device == "cpu" and cpu_has_native_bf16():
        return "bf16-mixed", "CPU with native bf16 matrix instructions"
    return "32-true", f"{device.upper()} without native bf16: bf16 would be emulated and slower"
