"""Every private Lightning and torch API tinyllm relies on, in one place.

Each is a name with a leading underscore that the installed version may
rename or drop without notice. tests/test_compat.py checks every one of them
against the installed Lightning and torch, and fails loudly when one
changes; a second test checks that no private name is used anywhere else in
the package. Lightning objects come in as arguments, and the one Lightning
class used is imported where it is used: importing this module imports no
Lightning, so the plain-PyTorch layer can use it too.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor


def evaluation_follows_batch(trainer: Any) -> bool:
    """Will Lightning run an evaluation right after the training batch that just ended?

    Lightning's own test (``_TrainingEpochLoop._should_check_val_fx``): it knows
    ``val_check_interval``, accumulation and the last batch of an epoch.
    """
    fit_loop = trainer.fit_loop
    return bool(fit_loop.epoch_loop._should_check_val_fx(fit_loop._data_fetcher))


def save_last_checkpoint(checkpoint: Any, trainer: Any) -> None:
    """Make ``checkpoint`` (a ModelCheckpoint with ``save_last``) write its last.ckpt now."""
    checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))


def training_batches_processed(trainer: Any) -> int:
    """Training batches consumed since the run began, over every resume (saved in, and restored from, checkpoints)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.processed)


def unrepeated_sampler(dataset: Any, num_replicas: int, rank: int) -> Any:
    """Each process's share of ``dataset`` for evaluation: every num_replicas-th item from ``rank``, none repeated.

    torch's ``DistributedSampler``, which Lightning puts in by default, pads the
    last share with repeats so all are equal, and a repeated window would count
    twice in the val loss. Lightning's ``UnrepeatedDistributedSampler`` does not
    pad; it lives in ``lightning.pytorch.overrides``, outside its documented API.
    Being a ``DistributedSampler``, Lightning leaves it in place.
    """
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)


def int8_weight_matmul(x: Tensor, weight: Tensor, scale: Tensor) -> Tensor:
    """x (N, K) bf16 times int8 ``weight`` (M, K)ᵀ, scaled per output row: torch's CPU int8-weight kernel."""
    return torch._weight_int8pack_mm(x, weight, scale)


def error_on_graph_break() -> Any:
    """A context in which ``torch.compile`` raises at a graph break instead of splitting the graph there."""
    return torch._dynamo.error_on_graph_break(True)


def training_compile_options() -> dict[str, Any]:
    """Inductor options for ``torch.compile`` of a model that trains on this machine.

    On a CPU where ATen runs its AVX512 kernels, torch 2.13's Inductor computes the
    bf16 backward of RoPE's key rotation at head width 64 as NaN; its 256-bit code
    computes the eager gradients (DEVLOG.md). ``cpp.simdlen`` is Inductor's own
    config, not a public API. It touches CPU kernels only, so a GPU run is unchanged.
    """
    return {"cpp.simdlen": 256} if torch.backends.cpu.get_cpu_capability() == "AVX512" else {}


def ignore_lightnings_own_deprecations() -> None:
    """Lightning 2.6's own use of a torch API that torch 2.13 deprecates (``LeafSpec``): nothing for a user to do."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
