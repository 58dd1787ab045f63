"""Reproducible experiments: ``experiment swaps``, the GPT-2 → LLaMA swaps measured side by side.

    python -m tinyllm experiment swaps --preset cpu --seeds "[1337, 1338, 1339]"

Five models differ in their architecture switches only: vanilla (LayerNorm,
ReLU MLP, learned positions, biases), vanilla with exactly one swap
(+rmsnorm, +swiglu, +rope), and modern (all three, bias-free like LLaMA).
A sixth run, modern+muon, swaps the optimizer instead: Muon (Jordan et al.,
2024) for the hidden weight matrices, AdamW for the rest.
Every run of one seed draws the same training batches in the same order (batch
k is a function of the seed and k), starts from the same seed, and follows the
same steps and learning-rate schedule; every evaluation covers the whole
validation split, so the curves compare like with like. Each run is an
ordinary ``fit`` through the CLI, with its own checkpoints and TensorBoard
directory: an interrupted experiment picks up where it stopped when re-run.

Swap 4, the KV cache, is a generation speed-up, not a training change:
``python -m tinyllm bench generate`` measures it.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from tinyllm.commands.plot import read_scalars
from tinyllm.core.config import PRESETS
from tinyllm.errors import TinyLLMError
from tinyllm.training.cli import RunFolders, build_cli

VARIANTS = ("vanilla", "vanilla+rmsnorm", "vanilla+swiglu", "vanilla+rope", "modern", "modern+muon")
SWITCHES = ("norm", "mlp", "pos_emb", "bias")  # what an architecture variant changes; everything else is the experiment's
# Swap 5 changes the optimizer, not the architecture: variant -> (architecture preset, model options).
OPTIMIZER_SWAPS = {"modern+muon": ("modern", {"optimizer": "muon", "muon_lr": 0.02})}


@dataclass(frozen=True)
class SwapRun:
    """The training every variant gets: model size, batches, steps, schedule."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    dropout: float
    batch_size: int
    max_steps: int
    eval_every: int
    lr: float
    min_lr: float
    warmup_steps: int
    about: str


EXPERIMENTS = {
    "original": SwapRun(6, 6, 384, 256, 0.2, 64, 2000, 250, 3e-4, 3e-4, 0,
                        "the original project's runs: 6x384, context 256, batch 64, 2000 steps (a GPU job)"),
    "cpu": SwapRun(4, 4, 128, 128, 0.0, 32, 600, 100, 2e-3, 2e-4, 50,
                   "a small 4x128 model, context 128, batch 32, 600 steps: 1-3 minutes a run on 2 CPU cores"),
    "smoke": SwapRun(1, 2, 32, 32, 0.0, 4, 6, 3, 2e-3, 2e-4, 1, "seconds: checks the pipeline, says nothing"),
}


def run_name(variant: str, seed: int) -> str:
    return f"{variant}-seed{seed}"


def run_path(experiment: str, variant: str, seed: int) -> str:
    """Where one run writes, under both checkpoints/ and logs/."""
    return f"swaps-{experiment}/{run_name(variant, seed)}"


def run_config(experiment: str, variant: str, seed: int) -> dict[str, Any]:
    """The LightningCLI config of one run, as the dict a YAML file would hold: only what differs from the defaults.

    Checkpoints, logging and exact resume are the CLI's, as for any run. Early
    stopping and samples are off: every variant runs the same number of steps.
    """
    preset, optimizer = OPTIMIZER_SWAPS.get(variant, (variant, {}))
    spec, switches = EXPERIMENTS[experiment], PRESETS[preset]
    arch = {"block_size": spec.block_size, "n_layer": spec.n_layer, "n_head": spec.n_head, "n_embd": spec.n_embd,
            "dropout": spec.dropout, **{k: getattr(switches, k) for k in SWITCHES}}  # fmt: skip
    return {
        "name": run_path(experiment, variant, seed),
        "seed_everything": seed,
        "model": {"arch": arch, "lr": spec.lr, "min_lr": spec.min_lr, "warmup_steps": spec.warmup_steps, **optimizer},
        "data": {"batch_size": spec.batch_size, "seed": seed},
        "trainer": {"max_steps": spec.max_steps, "val_check_interval": spec.eval_every, "gradient_clip_val": 1.0,
                    "log_every_n_steps": min(10, spec.eval_every)},
        "early_stopping": None,
        "samples": None,
        "throughput": {"window_size": max(2, min(20, spec.max_steps // 3))},
    }  # fmt: skip


def train_one(experiment: str, variant: str, seed: int) -> dict[str, Any]:
    """Train (or resume, or skip when finished) one run; returns its measured results."""
    cfg = run_config(experiment, variant, seed)
    name, folders = run_name(variant, seed), RunFolders(run_path(experiment, variant, seed))
    run_dir = folders.checkpoints
    config_file, done, clock = run_dir / "config.yaml", run_dir / "results.json", run_dir / "seconds.txt"
    text = json.dumps(cfg, indent=2)  # JSON is YAML: LightningCLI reads it as a config
    if config_file.exists() and config_file.read_text() != text:
        raise TinyLLMError(f"{run_dir} holds a run of another {experiment!r} configuration: move it away, or run "
                           "this experiment from another working directory")  # fmt: skip
    if done.exists():
        print(f"experiment: {name} already finished ({done})", file=sys.stderr)
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file.write_text(text)
    print(f"experiment: training {name} ({EXPERIMENTS[experiment].max_steps} steps)", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        cli = build_cli(["fit", "--config", str(config_file), "--ckpt_path", "last"])
    finally:  # the run's time adds up over interrupted sessions
        seconds = time.perf_counter() - t0 + (float(clock.read_text()) if clock.exists() else 0.0)
        clock.write_text(f"{seconds:.1f}\n")
    scalars = read_scalars(folders.logs)
    if "val_loss" not in scalars:
        raise TinyLLMError(f"{name} logged no val_loss: check {folders.logs}")
    # Tokens/s of training alone (evaluation excluded), over a sliding window of steps.
    throughput = [v for _, v in scalars.get("train/device/items_per_sec", [])]
    result = {
        "variant": variant, "seed": seed, "parameters": cli.model.model.num_parameters(),
        "val_loss": scalars["val_loss"], "seconds": round(seconds, 1),
        "tokens_per_s": round(statistics.median(throughput), 1) if throughput else None,
        "steps": cli.trainer.global_step,
    }  # fmt: skip
    if result["steps"] < EXPERIMENTS[experiment].max_steps:
        raise TinyLLMError(f"{name} stopped at step {result['steps']}: re-run the same command to resume it")
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


# ----------------------------------------------------------------------------- the report


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pm(values: list[float], signed: bool = False) -> str:
    mean, sd = _mean_sd(values)
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text + (f" ± {sd:.3f}" if sd is not None else "")


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: val loss at each evaluation (mean over seeds), final loss, and the paired delta to vanilla."""
    steps = [s for s, _ in results[0]["val_loss"]]
    for r in results:
        if [s for s, _ in r["val_loss"]] != steps:
            raise TinyLLMError(f"{run_name(r['variant'], r['seed'])} was evaluated at other steps than "
                               f"{run_name(results[0]['variant'], results[0]['seed'])}: the runs are not comparable")
    base = {r["seed"]: r["val_loss"][-1][1] for r in results if r["variant"] == "vanilla"}
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == variant]
        curve = [statistics.fmean(dict(r["val_loss"])[s] for r in runs) for s in steps]
        finals = [r["val_loss"][-1][1] for r in runs]
        deltas = [r["val_loss"][-1][1] - base[r["seed"]] for r in runs if r["seed"] in base]
        speeds = [r["tokens_per_s"] for r in runs if r["tokens_per_s"]]
        rows.append({"variant": variant, "seeds": [r["seed"] for r in runs], "parameters": runs[0]["parameters"],
                     "steps": steps, "curve": curve, "final": finals, "delta": deltas,
                     "tokens_per_s": statistics.fmean(speeds) if speeds else None,
                     "minutes": statistics.fmean(r["seconds"] for r in runs) / 60})  # fmt: skip
    return rows


def write_table(rows: list[dict[str, Any]], experiment: str, path: Path) -> None:
    spec = EXPERIMENTS[experiment]
    seeds = rows[0]["seeds"]
    steps = rows[0]["steps"]
    head = ["variant", "parameters", *[f"val @{s}" for s in steps], "final val loss", "Δ vs vanilla",
            "tokens/s", "minutes"]  # fmt: skip
    lines = [
        f"# The swaps, measured: `python -m tinyllm experiment swaps --preset {experiment}`",
        "",
        f"Preset `{experiment}`: {spec.about}. Seeds {', '.join(map(str, seeds))}: every variant of one seed sees the "
        "same batches in the same order, with the same steps and schedule. Val loss is the cross-entropy "
        "(nats/char) over the whole validation split, at the steps TensorBoard shows (the evaluation after "
        f"optimizer step {spec.eval_every} is logged at step {spec.eval_every - 1}); the curve columns are means over seeds; ± is the standard "
        "deviation over seeds; Δ is the final loss paired by seed (variant − vanilla, negative = better). "
        "tokens/s counts training only; minutes include the evaluations.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for r in rows:
        delta = "(baseline)" if r["variant"] == "vanilla" else (_pm(r["delta"], signed=True) if r["delta"] else "–")
        speed = f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "–"
        cells = [f"`{r['variant']}`", f"{r['parameters']:,}", *[f"{v:.3f}" for v in r["curve"]], _pm(r["final"]),
                 delta, speed, f"{r['minutes']:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Swap 4, the KV cache, changes generation speed, not training: see `python -m tinyllm bench "
              "generate` (results/bench_generate_modern.json).", ""]
    path.write_text("\n".join(lines))


def write_plot(rows: list[dict[str, Any]], results: list[dict[str, Any]], experiment: str, path: Path) -> None:

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for r in rows:
        (line,) = ax.plot(r["steps"], r["curve"], marker="o", lw=2, label=r["variant"])
        runs = [dict(x["val_loss"]) for x in results if x["variant"] == r["variant"]]
        if len(runs) > 1:  # the spread over seeds
            lo = [min(run[s] for run in runs) for s in r["steps"]]
            hi = [max(run[s] for run in runs) for s in r["steps"]]
            ax.fill_between(r["steps"], lo, hi, color=line.get_color(), alpha=0.15)
    ax.set(xlabel="optimizer step", ylabel="val loss (nats/char)",
           title=f"The swaps, preset {experiment}, {len(rows[0]['seeds'])} seed(s): mean and min-max")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_swaps(experiment: str, seeds: list[int], variants: list[str], out: Path) -> list[dict[str, Any]]:
    if "vanilla" not in variants:
        raise TinyLLMError("the variants must include vanilla: every delta is measured against it")
    results = [train_one(experiment, v, s) for s in seeds for v in variants]
    rows = summarize(results)
    out.mkdir(parents=True, exist_ok=True)
    write_table(rows, experiment, out / "swaps.md")
    write_plot(rows, results, experiment, out / "swaps.png")
    (out / "swaps.json").write_text(json.dumps(
        {"experiment": experiment, "spec": asdict(EXPERIMENTS[experiment]), "runs": results}, indent=2) + "\n")
    return rows


def swaps(
    preset: str = "original",
    seeds: list[int] = [1337],
    variants: list[str] = list(VARIANTS),
    out: str = "results",
) -> None:
    """The GPT-2 -> LLaMA swaps as one experiment: vanilla, each single swap, modern and modern+muon, paired by seed.

    Args:
        preset: the training every variant gets: original (6x384, a GPU job), cpu (4x128, minutes) or smoke.
        seeds: one run per variant and seed, e.g. [1, 2, 3].
        variants: which of vanilla, vanilla+rmsnorm, vanilla+swiglu, vanilla+rope, modern, modern+muon.
        out: where swaps.md, swaps.png and swaps.json go.
    """
    if preset not in EXPERIMENTS:
        raise TinyLLMError(f"unknown --preset {preset!r}: choose one of {', '.join(EXPERIMENTS)}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise TinyLLMError(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    if len(set(variants)) != len(variants):
        raise TinyLLMError(f"--variants lists a variant twice: {variants}")
    if any(v in OPTIMIZER_SWAPS for v in variants) and not hasattr(torch.optim, "Muon"):
        raise TinyLLMError(f"torch {torch.__version__} has no torch.optim.Muon, which modern+muon trains with: "
                           "upgrade torch (2.9 or newer), or leave modern+muon out of --variants")  # fmt: skip
    if not seeds or len(set(seeds)) != len(seeds):
        raise TinyLLMError(f"--seeds must list distinct seeds, got {seeds}")
    folder = Path(out)
    rows = run_swaps(preset, seeds, variants, folder)
    print((folder / "swaps.md").read_text())
    print(f"wrote {folder / 'swaps.md'}, {folder / 'swaps.png'} and {folder / 'swaps.json'} ({len(rows)} variants)")
