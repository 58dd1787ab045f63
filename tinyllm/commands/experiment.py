"""Reproducible experiments, each a table (and most a picture) in results/: swaps, budgets, tokenizers, scaling.

``experiment swaps`` measures the GPT-2 → LLaMA swaps side by side:

    python -m tinyllm experiment swaps --config configs/swaps_cpu.yaml --seeds "[1337, 1338, 1339]"

Every variant is a config plus a delta: vanilla is ``configs/vanilla.yaml``
(LayerNorm, ReLU MLP, learned positions, biases), each single swap is vanilla
with one switch changed (+rmsnorm, +swiglu, +rope), modern is
``configs/modern.yaml`` (all three, bias-free like LLaMA), and modern+muon
swaps the optimizer instead: Muon (Jordan et al., 2024) for the hidden weight
matrices, AdamW for the rest. The ``modern+…`` rows after it are the next
era's switches (ReLU², QK-norm, untied head, zero-initialised projections,
value embeddings, residual scalars, logit soft-capping) and a small
regularization sweep (dropout, weight decay), each on the modern model and
compared with it. ``--config`` (after the variant's) sets the
training every variant gets: size, batches, steps, schedule.

Every run of one seed draws the same training batches in the same order (batch
k is a function of the seed and k), starts from the same seed, and follows the
same steps and learning-rate schedule; every evaluation covers the same
validation tokens (the table names them), so the curves compare like with
like. Each run is an ordinary ``fit`` through the CLI, with its own
checkpoints and TensorBoard directory: an interrupted experiment picks up
where it stopped when re-run.

Swap 4, the KV cache, is a generation speed-up, not a training change:
``python -m tinyllm bench generate`` measures it.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import torch
from matplotlib.figure import Figure

from tinyllm.commands.runs import (
    CONFIGS,
    LOSS_AXIS,
    LOSS_UNIT,
    NO_SAMPLES,
    RESULTS,
    check_seeds,
    finished_run_scalars,
    saved_config,
    seed_options,
    seeded,
    shipped,
    validation_split,
    validation_splits,
)
from tinyllm.core.defaults import SEED
from tinyllm.core.optim import check_muon
from tinyllm.errors import TinyLLMError
from tinyllm.files import check_writable_folder, read_record, user_path, write_record
from tinyllm.training.cli import RunFolders, build_cli
from tinyllm.training.metrics import TOKENS_PER_S, VAL_LOSS
from tinyllm.training.precision import cpu_name

# variant -> (the config it starts from, its delta): one switch, or the optimizer, at a time.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "vanilla": ("vanilla.yaml", []),
    "vanilla+rmsnorm": ("vanilla.yaml", ["--model.arch.norm=rmsnorm"]),
    "vanilla+swiglu": ("vanilla.yaml", ["--model.arch.mlp=swiglu"]),
    "vanilla+rope": ("vanilla.yaml", ["--model.arch.pos_emb=rope"]),
    "modern": ("modern.yaml", []),
    "modern+muon": ("modern.yaml", ["--model.optimizer=muon"]),  # at its own rate, MUON_LR
    # The 2025 switches (model.py), each on the modern model: its delta is measured against modern.
    "modern+relu2": ("modern.yaml", ["--model.arch.mlp=relu2"]),
    "modern+qk_norm": ("modern.yaml", ["--model.arch.qk_norm=true"]),
    "modern+untied": ("modern.yaml", ["--model.arch.tie_embeddings=false"]),
    "modern+zero_init": ("modern.yaml", ["--model.arch.zero_init_proj=true"]),
    "modern+value_embeds": ("modern.yaml", ["--model.arch.value_embeds=true"]),
    "modern+residual_scalars": ("modern.yaml", ["--model.arch.residual_scalars=true"]),
    "modern+softcap": ("modern.yaml", ["--model.arch.logit_softcap=15.0"]),
    # Regularization, a small sweep on modern: 1 MB of text is seen many times over in a long run.
    "modern+dropout0.1": ("modern.yaml", ["--model.arch.dropout=0.1"]),
    "modern+wd0": ("modern.yaml", ["--model.weight_decay=0.0"]),
    "modern+wd0.3": ("modern.yaml", ["--model.weight_decay=0.3"]),
}
MUON_VARIANTS = ("modern+muon",)
SWITCHES_2025 = ("modern+relu2", "modern+qk_norm", "modern+untied", "modern+zero_init", "modern+value_embeds",
                 "modern+residual_scalars", "modern+softcap")  # fmt: skip
REGULARIZATION = ("modern+dropout0.1", "modern+wd0", "modern+wd0.3")
Variant = Literal[tuple(VARIANTS)]  # type: ignore[valid-type]  # --help lists the choices from VARIANTS
GPT2_TO_LLAMA = ("vanilla", "vanilla+rmsnorm", "vanilla+swiglu", "vanilla+rope", "modern", "modern+muon")  # the default


def baseline(variant: str) -> str | None:
    """The variant each one is compared with, seed by seed: modern for ``modern+…``, else vanilla."""
    if variant == "vanilla":
        return None
    return "modern" if variant.startswith("modern+") else "vanilla"


def compared_with(variant: str, variants: Collection[str]) -> str | None:
    """``variant``'s baseline in an experiment of ``variants``: without vanilla, modern is only the baseline of
    the ``modern+…`` rows, compared with nothing."""
    if variant == "modern" and "vanilla" not in variants and any(v.startswith("modern+") for v in variants):
        return None
    return baseline(variant)


def missing_baselines(variants: list[str]) -> list[str]:
    """The baselines ``variants`` need and lack."""
    return sorted({compared_with(v, variants) for v in variants} - set(variants) - {None})


RESULT_KEYS = ("variant", "seed", "parameters", "val_loss", "seconds", "tokens_per_s", "steps", "max_steps")


def experiment_name(config: str) -> str:
    """The experiment's folder name under checkpoints/ and logs/: its config's file name."""
    return Path(config).stem


def run_path(config: str, variant: str, seed: int) -> str:
    """Where one run writes, under both checkpoints/ and logs/."""
    return f"swaps-{experiment_name(config)}/{seeded(variant, seed)}"


def run_args(config: str, variant: str, seed: int) -> list[str]:
    """The ``fit`` arguments of one run: the variant's config, the experiment's config, the delta, the machinery.

    Checkpoints, logging and exact resume are the CLI's, as for any run. Early
    stopping and samples are off: every variant runs the same number of steps.
    """
    base, delta = VARIANTS[variant]
    return ["--config", str(CONFIGS / base), "--config", config, *delta,
            "--name", run_path(config, variant, seed), *seed_options(seed),
            "--early_stopping", "null", *NO_SAMPLES]  # fmt: skip


def train_one(config: str, variant: str, seed: int) -> dict[str, Any]:
    """Train (or resume, or skip when finished) one run; returns its measured results."""
    args = run_args(config, variant, seed)
    name, folders = seeded(variant, seed), RunFolders(run_path(config, variant, seed))
    run_dir = folders.checkpoints
    args_file, done, clock = run_dir / "args.json", run_dir / "results.json", run_dir / "seconds.txt"
    if args_file.exists() and read_record(args_file, list) != args:
        raise TinyLLMError(f"{run_dir} holds a run of another {experiment_name(config)!r} configuration: move it "
                           "away, or run this experiment from another working directory")  # fmt: skip
    if done.exists():
        print(f"experiment: {name} already finished ({done})", file=sys.stderr)
        result = read_record(done, dict, RESULT_KEYS)
        if "validation" not in result and folders.config.exists():  # finished before runs recorded their split
            result["validation"] = validation_split(saved_config(folders)["data"])
        return result
    run_dir.mkdir(parents=True, exist_ok=True)
    write_record(args_file, args)
    print(f"experiment: training {name}", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        cli = build_cli(["fit", *args, "--ckpt_path", "last"])
    finally:  # the run's time adds up over interrupted processes
        seconds = time.perf_counter() - t0 + (read_record(clock, (int, float)) if clock.exists() else 0.0)
        write_record(clock, round(seconds, 1))
    scalars = finished_run_scalars(folders.logs, name)
    # Tokens/s of training alone (evaluation excluded), over a sliding window of steps.
    throughput = [v for _, v in scalars.get(TOKENS_PER_S, [])]
    result = {
        "variant": variant, "seed": seed, "parameters": cli.model.model.num_parameters(),
        "val_loss": scalars[VAL_LOSS], "seconds": round(seconds, 1),
        "tokens_per_s": round(statistics.median(throughput), 1) if throughput else None,
        "steps": cli.trainer.global_step, "max_steps": cli.trainer.max_steps,
        "validation": validation_split(saved_config(folders)["data"]),
    }  # fmt: skip
    if result["steps"] < cli.trainer.max_steps:
        raise TinyLLMError(f"{name} stopped at step {result['steps']}: re-run the same command to resume it")
    write_record(done, result)
    return result


# ----------------------------------------------------------------------------- the report


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pm(values: list[float], signed: bool = False) -> str:
    mean, sd = _mean_sd(values)
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text + (f" ± {sd:.3f}" if sd is not None else "")


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: val loss at each evaluation (mean over seeds), final loss, and the delta to its baseline,
    paired by seed."""
    steps = [s for s, _ in results[0]["val_loss"]]
    for r in results:
        if [s for s, _ in r["val_loss"]] != steps:
            raise TinyLLMError(f"{seeded(r['variant'], r['seed'])} was evaluated at other steps than "
                               f"{seeded(results[0]['variant'], results[0]['seed'])}: the runs are not comparable")
    final = {(r["variant"], r["seed"]): r["val_loss"][-1][1] for r in results}
    rows, variants = [], list(dict.fromkeys(r["variant"] for r in results))
    for variant in variants:
        runs = [r for r in results if r["variant"] == variant]
        curve = [statistics.fmean(dict(r["val_loss"])[s] for r in runs) for s in steps]
        finals = [r["val_loss"][-1][1] for r in runs]
        base = compared_with(variant, variants)
        deltas = [final[variant, r["seed"]] - final[base, r["seed"]] for r in runs if (base, r["seed"]) in final]
        speeds = [r["tokens_per_s"] for r in runs if r["tokens_per_s"]]
        rows.append({"variant": variant, "seeds": [r["seed"] for r in runs], "parameters": runs[0]["parameters"],
                     "steps": steps, "curve": curve, "final": finals, "baseline": base, "delta": deltas,
                     "tokens_per_s": statistics.fmean(speeds) if speeds else None,
                     "minutes": statistics.fmean(r["seconds"] for r in runs) / 60})  # fmt: skip
    return rows


def swaps_command(config: str, seeds: list[int], variants: list[str]) -> str:
    """The command line that redoes a table: every option that differs from the default."""
    line = f"python -m tinyllm experiment swaps --config {config} --seeds \"[{', '.join(map(str, seeds))}]\""
    return line if variants == list(GPT2_TO_LLAMA) else f"{line} --variants \"[{', '.join(variants)}]\""


def write_table(rows: list[dict[str, Any]], config: str, splits: str, path: Path) -> None:
    seeds = rows[0]["seeds"]
    steps = rows[0]["steps"]
    head = ["variant", "parameters", *[f"val @{s}" for s in steps], "final val loss", "Δ (paired)", "vs",
            "tokens/s", "minutes"]  # fmt: skip
    lines = [
        f"# The swaps, measured: `{swaps_command(config, seeds, [r['variant'] for r in rows])}`",
        "",
        f"Measured on {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}. "
        f"Training: `{config}`. Seeds {', '.join(map(str, seeds))}: every variant of one seed sees the "
        "same batches in the same order, with the same steps and schedule. Val loss is the cross-entropy, in "
        f"{LOSS_UNIT}, over {splits}, at the steps TensorBoard shows (the evaluation after "
        f"optimizer step {steps[0] + 1} is logged at step {steps[0]}); the curve columns are means over seeds; "
        "± is the standard deviation over seeds; Δ is the final loss paired by seed (variant − the baseline in the "
        "`vs` column: "
        "vanilla for the GPT-2 → LLaMA swaps, modern for the rows after it; negative = better). "
        "tokens/s counts training only; minutes include the evaluations.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for r in rows:
        delta = "(baseline)" if r["baseline"] is None else (_pm(r["delta"], signed=True) if r["delta"] else "–")
        speed = f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "–"
        cells = [f"`{r['variant']}`", f"{r['parameters']:,}", *[f"{v:.3f}" for v in r["curve"]], _pm(r["final"]),
                 delta, r["baseline"] or "", speed, f"{r['minutes']:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Swap 4, the KV cache, changes generation speed, not training: see `python -m tinyllm bench "
              "generate` (results/bench_generate_modern.json).", ""]
    path.write_text("\n".join(lines))


def write_plot(rows: list[dict[str, Any]], results: list[dict[str, Any]], config: str, path: Path) -> None:

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for r in rows:
        (line,) = ax.plot(r["steps"], r["curve"], marker="o", lw=2, label=r["variant"])
        runs = [dict(x["val_loss"]) for x in results if x["variant"] == r["variant"]]
        if len(runs) > 1:  # the spread over seeds
            lo = [min(run[s] for run in runs) for s in r["steps"]]
            hi = [max(run[s] for run in runs) for s in r["steps"]]
            ax.fill_between(r["steps"], lo, hi, color=line.get_color(), alpha=0.15)
    ax.set(xlabel="optimizer step", ylabel=LOSS_AXIS,
           title=f"The swaps, {experiment_name(config)}, {len(rows[0]['seeds'])} seed(s): mean and min-max")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_swaps(config: str, seeds: list[int], variants: list[str], out: Path) -> list[dict[str, Any]]:
    missing = missing_baselines(variants)
    if missing:
        raise TinyLLMError(f"the variants must include {', '.join(missing)}: the deltas are measured against it")
    results = [train_one(config, v, s) for s in seeds for v in variants]
    rows = summarize(results)
    out.mkdir(parents=True, exist_ok=True)
    write_table(rows, config, validation_splits(results), out / "swaps.md")
    write_plot(rows, results, config, out / "swaps.png")
    (out / "swaps.json").write_text(json.dumps({"config": config, "machine": cpu_name(), "runs": results},
                                               indent=2) + "\n")  # fmt: skip
    return rows


def swaps(
    config: str = "configs/swaps_cpu.yaml",
    seeds: list[int] = [SEED],
    variants: list[Variant] = list(GPT2_TO_LLAMA),
    out: str = RESULTS,
) -> None:
    """The swaps as one experiment, paired by seed: GPT-2 -> LLaMA one switch at a time, then the 2025 ones on modern.

    Args:
        config: the training every variant gets (configs/swaps_cpu.yaml: 4x128, minutes;
            configs/swaps_gpu.yaml: 6x384).
        seeds: one run per variant and seed, e.g. [1, 2, 3].
        variants: which to run, of the choices below (VARIANTS in tinyllm/commands/experiment.py): by default the
            GPT-2 -> LLaMA ones; the 2025 switches and the regularization sweep are each one modern+ variant. A
            modern+ variant needs modern beside it; vanilla's swaps, and modern itself unless it is the baseline of
            modern+ rows, need vanilla.
        out: where swaps.md, swaps.png and swaps.json go.
    """
    if not variants:
        raise TinyLLMError(f"--variants is empty: choose one or more of {', '.join(VARIANTS)}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise TinyLLMError(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    if len(set(variants)) != len(variants):
        raise TinyLLMError(f"--variants lists a variant twice: {variants}")
    if any(v in MUON_VARIANTS for v in variants):
        check_muon("leave modern+muon out of --variants")
    check_seeds(seeds)
    config = shipped(config)
    check_writable_folder(user_path(out), "--out")
    folder = user_path(out)
    rows = run_swaps(config, seeds, variants, folder)
    print((folder / "swaps.md").read_text())
    print(f"wrote {folder / 'swaps.md'}, {folder / 'swaps.png'} and {folder / 'swaps.json'} ({len(rows)} variants)")
