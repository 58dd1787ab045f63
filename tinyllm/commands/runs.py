"""What every experiment shares: the shipped recipes, seeds, time budgets, and one training run in its own process.

``experiment budgets``, ``tokenizers`` and ``scaling`` train each point with :func:`run_rung`: an ordinary
``fit``, run as a user types it, with ``--trainer.max_time`` set to its budget; what it reached is read back
from its checkpoint and logs. ``experiment swaps`` trains in this process instead (a fixed number of steps)
and shares the rest: where results go, the seeds, the run names.
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tinyllm.commands.plot import read_scalars
from tinyllm.core.checkpoint import (
    budget_seconds_used,
    checkpoint_hparams,
    checkpoint_step,
    read_checkpoint,
    train_batches_done,
)
from tinyllm.core.dataset import is_dataset
from tinyllm.core.defaults import check_seed
from tinyllm.errors import TinyLLMError
from tinyllm.files import user_path
from tinyllm.training.cli import RunFolders
from tinyllm.training.metrics import TOKENS_PER_S, VAL_BPB, VAL_LOSS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the shipped recipes
CPU_RECIPE = "configs/cpu.yaml"  # the recipe meant for any max_time: the timed experiments' default
RESULTS = "results"  # where every experiment writes its table, picture and record
NO_SAMPLES = ("--samples", "null")  # a run measured for a table prints no text samples
LOSS_UNIT = "nats per token (per character for the char tokenizer)"  # a table's val loss
LOSS_AXIS = "val loss (nats/token)"  # a plot's


def seeded(name: str, seed: int) -> str:
    """One seed's run of ``name``: its folder under checkpoints/ and logs/."""
    return f"{name}-seed{seed}"


def shipped(config: str) -> str:
    """``config`` as given, else as a path inside tinyllm's own folder (``configs/cpu.yaml`` from anywhere)."""
    for path in (user_path(config), CONFIGS.parent / config):
        if path.is_file():
            return str(path)
    raise TinyLLMError(f"--config {config} is not a file: pass a training config such as {CPU_RECIPE}")


def budget_name(minutes: float) -> str:
    """A budget in a run's name (``5min``): two budgets with one name would be one run folder."""
    return f"{minutes:g}min"


def whole_seconds(minutes: float) -> int:
    """A budget as ``--trainer.max_time`` takes it: whole seconds."""
    return round(minutes * 60)


def max_time(minutes: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` for a budget in minutes."""
    seconds = whole_seconds(minutes)
    return f"{seconds // 86400:02d}:{seconds % 86400 // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def check_budgets(minutes: list[float], option: str = "--minutes", trained: bool = True) -> None:
    """Time budgets: finite (inf or nan has no DD:HH:MM:SS) and at least a second (Lightning's budget of zero
    is no budget). Budgets that are ``trained`` must also differ in their runs' names (``budget_name``): a
    second run of one name would meet the first one's folder after it had trained."""
    if not minutes or not all(math.isfinite(m) and whole_seconds(m) >= 1 for m in minutes):
        raise TinyLLMError(f"{option} must list finite budgets of at least a second (1/60 minute), got {minutes}")
    names = [budget_name(m) for m in minutes]
    if trained and len(set(names)) != len(names):
        raise TinyLLMError(f"{option} lists a budget twice ({', '.join(names)}): give each once")


def finished_run_scalars(logs: Path, run: str) -> dict[str, list[tuple[int, float]]]:
    """The series a finished run logged; one line, not a KeyError, when it logged no val loss."""
    scalars = read_scalars(logs)
    if VAL_LOSS not in scalars:
        raise TinyLLMError(f"{run} logged no {VAL_LOSS}: check {logs} (was validation switched off?)")
    return scalars


def run_rung(config: str, minutes: float, extra: list[str], name: str) -> dict[str, Any]:
    """One budget: a fit in its own process, then what it reached, read back from its checkpoint and logs."""
    run = RunFolders(name)
    if run.holds_a_run():
        raise TinyLLMError(f"{run.checkpoints} already holds a run: move it away, or run the experiment from another "
                           "working directory")  # fmt: skip
    command = [sys.executable, "-m", "tinyllm", "fit", "--config", config, "--name", name, "--trainer.max_time",
               max_time(minutes), "--trainer.max_steps", "-1", *extra]  # fmt: skip
    print(f"experiment: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(command)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise TinyLLMError(f"the {minutes:g}-minute run failed (exit {done.returncode}): see its output above")
    _, last = read_checkpoint(run.last)
    scalars = finished_run_scalars(run.logs, f"the {minutes:g}-minute run")
    speeds = [v for _, v in scalars.get(TOKENS_PER_S, [])]
    cfg = saved_config(run)
    return {
        "budget_min": minutes, "name": name, "val_loss": scalars[VAL_LOSS][-1][1], "steps": checkpoint_step(last),
        "val_bpb": scalars[VAL_BPB][-1][1] if VAL_BPB in scalars else None,
        "tokens": train_batches_done(last) * cfg["data"]["batch_size"] * cfg["model"]["arch"]["block_size"],
        "validation": validation_split(cfg["data"]),
        "tokens_per_s": round(statistics.median(speeds), 1) if speeds else None, "wall_s": round(wall, 1),
        "train_s": round(budget_seconds_used(last) or 0.0, 1),
        "arch": checkpoint_hparams(last)["arch"], "options": extra,
    }  # fmt: skip


def saved_config(run: RunFolders) -> dict[str, Any]:
    """The config a run saved (its config.yaml): every option it trained with, defaults included."""
    return yaml.safe_load(run.config.read_text())


def validation_split(data: dict[str, Any]) -> str:
    """What a run's val loss was measured on, from the data options its config saved."""
    path, fraction, most = data.get("path"), f"{data['val_fraction']:.0%}", data.get("val_tokens")
    if path is None:  # 111k characters: under any usual val_tokens, so all of it
        return f"the whole validation split, the last {fraction} of Tiny Shakespeare"
    split = f"the validation split of {path}" if is_dataset(path) else f"the last {fraction} of {path}"
    return split if most is None else f"{split}, at most about {most:,} tokens of it"


def validation_splits(rows: list[dict[str, Any]]) -> str:
    """The splits a table's val losses were measured on, each named once (a row kept from before rows recorded
    its split says only "the validation split")."""
    return "; ".join(dict.fromkeys(r.get("validation", "the validation split") for r in rows))


def mean_sd(values: list[float]) -> str:
    """``1.4200 ± 0.0200`` over seeds, or the one value."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


SEED_OPTIONS = ("--seed_everything", "SEED", "--data.seed", "SEED")  # every rung's first options


def seed_options(seed: int) -> list[str]:
    return [str(seed) if o == "SEED" else o for o in SEED_OPTIONS]


def check_seeds(seeds: list[int]) -> None:
    """One run per seed: refuse an empty list or a seed given twice (it would train the same run twice)."""
    if not seeds or len(frozenset(seeds)) != len(seeds):
        raise TinyLLMError(f"--seeds must list distinct seeds, got {seeds}")
    for seed in seeds:
        check_seed(seed, "--seeds")
