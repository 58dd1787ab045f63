"""The budget ladder: the best model a CPU buys in 1, 5, 30 minutes, measured and tabled.

    python -m tinyllm experiment budgets --config configs/cpu.yaml --minutes "[1, 5, 30]"

Each rung is an ordinary ``fit`` of the config, run as its own process exactly
as a user types it, with ``--trainer.max_time`` set to the budget: the run
finishes by its deadline with its learning rate decayed and its last
evaluation (over the whole validation split) done. The table gives, per
budget, the final val loss, the optimizer steps and tokens it bought, the
training tokens/s, and the process's whole wall time (start-up included).
A reference row measured elsewhere (nanoGPT's baby recipe, say) can be put
beside it with ``--reference FILE.json``.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from tinyllm.commands.plot import read_scalars
from tinyllm.core.checkpoint import budget_seconds_used, checkpoint_hparams, checkpoint_step, read_checkpoint, train_batches_done
from tinyllm.core.dataset import is_dataset
from tinyllm.core.defaults import SEED, check_seed
from tinyllm.errors import TinyLLMError
from tinyllm.files import check_writable_folder
from tinyllm.training.metrics import TOKENS_PER_S, VAL_BPB, VAL_LOSS
from tinyllm.training.cli import RunFolders
from tinyllm.training.precision import cpu_name

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the shipped recipes


def shipped(config: str) -> str:
    """``config`` as given, else as a path inside tinyllm's own folder (``configs/cpu.yaml`` from anywhere)."""
    for path in (Path(config), CONFIGS.parent / config):
        if path.is_file():
            return str(path)
    raise TinyLLMError(f"--config {config} is not a file: pass a training config such as configs/cpu.yaml")


def max_time(minutes: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` for a budget in minutes (whole seconds)."""
    seconds = round(minutes * 60)
    return f"{seconds // 86400:02d}:{seconds % 86400 // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def check_budgets(minutes: list[float], option: str = "--minutes") -> None:
    """Time budgets a run can be given: positive and finite (inf or nan has no DD:HH:MM:SS)."""
    if not minutes or not all(math.isfinite(m) and m > 0 for m in minutes):
        raise TinyLLMError(f"{option} must list positive, finite budgets in minutes, got {minutes}")


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
        raise TinyLLMError(f"{run.checkpoints} already holds a run: move it away, or run the ladder in another folder")
    command = [sys.executable, "-m", "tinyllm", "fit", "--config", config, "--name", name, "--trainer.max_time",
               max_time(minutes), "--trainer.max_steps", "-1", *extra]  # fmt: skip
    print(f"budgets: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(command)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise TinyLLMError(f"the {minutes:g}-minute run failed (exit {done.returncode}): see its output above")
    _, last = read_checkpoint(run.last)
    scalars = finished_run_scalars(run.logs, f"the {minutes:g}-minute run")
    speeds = [v for _, v in scalars.get(TOKENS_PER_S, [])]
    cfg = yaml.safe_load(run.config.read_text())
    return {
        "budget_min": minutes, "name": name, "val_loss": scalars[VAL_LOSS][-1][1], "steps": checkpoint_step(last),
        "val_bpb": scalars[VAL_BPB][-1][1] if VAL_BPB in scalars else None,
        "tokens": train_batches_done(last) * cfg["data"]["batch_size"] * cfg["model"]["arch"]["block_size"],
        "validation": validation_split(cfg["data"]),
        "tokens_per_s": round(statistics.median(speeds), 1) if speeds else None, "wall_s": round(wall, 1),
        "train_s": round(budget_seconds_used(last) or 0.0, 1),
        "arch": checkpoint_hparams(last)["arch"], "options": extra,
    }  # fmt: skip


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


def nats_per_byte(row: dict[str, Any]) -> float:
    """A rung's val loss per byte of validation text: comparable across tokenizers, unlike its loss per token."""
    return row["val_bpb"] * math.log(2) if row.get("val_bpb") is not None else row["val_loss"]


def mean_sd(values: list[float]) -> str:
    """``1.4200 ± 0.0200`` over seeds, or the one value."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def write_table(rows: list[dict[str, Any]], config: str, reference: dict[str, Any] | None, path: Path) -> None:
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"# The budget ladder: `python -m tinyllm experiment budgets --config {config}`",
        "",
        f"Measured on {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}. Val loss: "
        f"cross-entropy of the final weights over {validation_splits(rows)}, in "
        "nats per byte of its text (val bpb × ln 2), the scale every tokenizer shares: on Tiny Shakespeare's ASCII "
        "a byte is a character, so for the char tokenizer this is its per-token loss, nats/char. Budget: "
        "`--trainer.max_time`, the training time including evaluations and checkpoints; "
        f"wall: the whole `python -m tinyllm fit` process, start-up included. Seeds {', '.join(map(str, seeds))}: "
        "val loss is the mean ± sd over them, the other columns their means.",
        "",
        "| budget | val loss | steps | tokens | tokens/s | wall | options beyond the config |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for minutes in dict.fromkeys(r["budget_min"] for r in rows):
        runs = [r for r in rows if r["budget_min"] == minutes]
        mean = lambda key: statistics.fmean(r[key] for r in runs)  # noqa: E731
        loss = mean_sd([nats_per_byte(r) for r in runs])
        speed = f"{mean('tokens_per_s'):,.0f}" if all(r["tokens_per_s"] for r in runs) else "–"
        options = " ".join(f"`{o}`" for o in runs[0]["options"][len(SEED_OPTIONS) :]) or "–"
        lines.append(f"| {minutes:g} min | **{loss}** | {mean('steps'):,.0f} | {mean('tokens') / 1e6:.2f} M "
                     f"| {speed} | {mean('wall_s'):.0f} s | {options} |")  # fmt: skip
    if reference:
        lines += ["", f"Beside it, measured on the same machine: {reference['label']}", "",
                  "| run | val loss | steps | tokens | wall |", "|---|---:|---:|---:|---:|",
                  f"| {reference['run']} | {reference['val_loss']:.4f} | {reference['steps']:,} | "
                  f"{reference['tokens'] / 1e6:.2f} M | {reference['wall_s']:.0f} s |", "", reference.get("note", "")]  # fmt: skip
    path.write_text("\n".join(lines).rstrip() + "\n")


REFERENCE_FIELDS = {"label": str, "run": str, "val_loss": float, "steps": int, "tokens": int, "wall_s": float}


def check_reference(path: str, ref: Any) -> None:
    """The reference row's fields, checked before any rung trains (the table is written after the last one)."""
    if not isinstance(ref, dict):
        raise TinyLLMError(f"--reference {path} holds a {type(ref).__name__}, not an object with the fields "
                           f"{', '.join(REFERENCE_FIELDS)}")  # fmt: skip
    for key, kind in REFERENCE_FIELDS.items():
        value = ref.get(key)
        numeric = kind is not str and isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (isinstance(value, str) if kind is str else numeric):
            raise TinyLLMError(f"--reference {path} needs {key!r} as a {'text' if kind is str else 'number'}, "
                               f"got {value!r}")  # fmt: skip


SEED_OPTIONS = ("--seed_everything", "SEED", "--data.seed", "SEED")  # every rung's first options


def seed_options(seed: int) -> list[str]:
    return [str(seed) if o == "SEED" else o for o in SEED_OPTIONS]


def check_seeds(seeds: list[int]) -> None:
    """One run per seed: refuse an empty list or a seed given twice (it would train the same run twice)."""
    if not seeds or len(frozenset(seeds)) != len(seeds):
        raise TinyLLMError(f"--seeds must list distinct seeds, got {seeds}")
    for seed in seeds:
        check_seed(seed, "--seeds")


def budgets(
    config: str = "configs/cpu.yaml",
    minutes: list[float] = [1, 5],
    seeds: list[int] = [SEED],
    set: list[str] = [],
    rung_set: dict[str, list[str]] = {},
    reference: str | None = None,
    out: str = "results",
) -> None:
    """The budget ladder: for each time budget, the val loss a config reaches by its deadline, and its speed.

    Args:
        config: the config every rung trains (a CPU recipe meant for any max_time).
        minutes: the budgets, in minutes of training time.
        seeds: one run per budget and seed; the table gives the mean ± sd over them.
        set: more options for every fit, e.g. ["--data.batch_size=16"].
        rung_set: more options for one rung, by its minutes, e.g. {"30": ["--model.arch.dropout=0.2"]}.
        reference: a JSON file with a row measured elsewhere (label, run, val_loss, steps, tokens, wall_s, note).
        out: where budgets.md and budgets.json go.
    """
    check_budgets(minutes)
    check_seeds(seeds)
    config = shipped(config)
    ref = None
    if reference:
        try:
            ref = json.loads(Path(reference).read_text())
        except (OSError, ValueError) as e:
            raise TinyLLMError(f"--reference {reference} is not a readable JSON file ({e})") from None
        check_reference(reference, ref)
    check_writable_folder(Path(out), "--out")
    keys = [f"{m:g}" for m in minutes]
    unknown = sorted(key for key in rung_set if key not in keys)
    if unknown:
        raise TinyLLMError(f"--rung_set names budgets that are not in --minutes: {', '.join(unknown)} "
                           f"(its keys are the minutes as written here: {', '.join(keys)})")  # fmt: skip
    rows = [{**run_rung(config, m, [*seed_options(seed), *set, *rung_set.get(f"{m:g}", [])],
                        name=f"budget-{m:g}min-seed{seed}"), "seed": seed}
            for m in minutes for seed in seeds]  # fmt: skip
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_table(rows, config, ref, folder / "budgets.md")
    (folder / "budgets.json").write_text(json.dumps({"config": config, "machine": cpu_name(), "rows": rows,
                                                      "reference": ref}, indent=2) + "\n")  # fmt: skip
    print((folder / "budgets.md").read_text())
