"""The budget ladder: the best model a CPU buys in 1, 5, 30 minutes, measured and tabled.

    python -m tinyllm experiment budgets --config configs/cpu.yaml --minutes "[1, 5, 30]"

Each rung is an ordinary ``fit`` of the config, run as its own process exactly
as a user types it, with ``--trainer.max_time`` set to the budget: the run
finishes by its deadline with its learning rate decayed and its last
evaluation (over the validation split the table names) done. The table gives, per
budget, the final val loss, the optimizer steps and tokens it bought, the
training tokens/s, and the process's whole wall time (start-up included).
A reference row measured elsewhere (nanoGPT's baby recipe, say) can be put
beside it with ``--reference FILE.json``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

from tinyllm.commands.runs import (
    CPU_RECIPE,
    RESULTS,
    SEED_OPTIONS,
    budget_name,
    check_budgets,
    check_seeds,
    mean_sd,
    run_rung,
    seed_options,
    seeded,
    shipped,
    validation_splits,
)
from tinyllm.core.defaults import SEED
from tinyllm.errors import TinyLLMError
from tinyllm.files import check_writable_folder, user_path
from tinyllm.training.metrics import bpb_in_nats
from tinyllm.training.precision import cpu_name


def nats_per_byte(row: dict[str, Any]) -> float:
    """A rung's val loss per byte of validation text: comparable across tokenizers, unlike its loss per token."""
    return bpb_in_nats(row["val_bpb"]) if row.get("val_bpb") is not None else row["val_loss"]


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
                  f"{reference['tokens'] / 1e6:.2f} M | {reference['wall_s']:.0f} s |", "",
                  reference.get("note", "")]  # fmt: skip
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


def budgets(
    config: str = CPU_RECIPE,
    minutes: list[float] = [1, 5],
    seeds: list[int] = [SEED],
    set: list[str] = [],
    rung_set: dict[str, list[str]] = {},
    reference: str | None = None,
    out: str = RESULTS,
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
            ref = json.loads(user_path(reference).read_text())
        except (OSError, ValueError) as e:
            raise TinyLLMError(f"--reference {reference} is not a readable JSON file ({e})") from None
        check_reference(reference, ref)
    check_writable_folder(user_path(out), "--out")
    keys = [f"{m:g}" for m in minutes]
    unknown = sorted(key for key in rung_set if key not in keys)
    if unknown:
        raise TinyLLMError(f"--rung_set names budgets that are not in --minutes: {', '.join(unknown)} "
                           f"(its keys are the minutes as written here: {', '.join(keys)})")  # fmt: skip
    rows = [{**run_rung(config, m, [*seed_options(seed), *set, *rung_set.get(f"{m:g}", [])],
                        name=seeded(f"budget-{budget_name(m)}", seed)), "seed": seed}
            for m in minutes for seed in seeds]  # fmt: skip
    folder = user_path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_table(rows, config, ref, folder / "budgets.md")
    (folder / "budgets.json").write_text(json.dumps({"config": config, "machine": cpu_name(), "rows": rows,
                                                      "reference": ref}, indent=2) + "\n")  # fmt: skip
    print((folder / "budgets.md").read_text())
