"""``experiment scaling``: which model size buys the lowest loss in a time budget, on this machine.

    python -m tinyllm experiment scaling --config configs/cpu.yaml --minutes "[0.5, 1, 2]"

Chinchilla (Hoffmann et al., 2022, arXiv:2203.15556) asked how to split a
fixed compute budget between parameters N and training tokens D. On a CPU
the budget is minutes, and a larger model buys fewer tokens in them. Each
(size, budget) here is one ``fit`` of the config with that shape, in its own
process (``runs.run_rung``, as every rung of ``experiment budgets``). Then
two fits:

    loss        L(N, D) = E + A / N^α + B / D^β          (Chinchilla's form)
    tokens      D(N, T) = c · N^-p · T^q                 (what the machine buys)

and the frontier: for each budget T, the N that minimises L(N, D(N, T)).
E is the loss no size reaches; A/N^α what a finite model costs; B/D^β what
finite data costs. With one seed per point, the spread of a 5-minute run
(about ±0.01 in val loss on this corpus) bounds what the fit can resolve.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure

from tinyllm.commands.runs import (
    CPU_RECIPE,
    LOSS_AXIS,
    LOSS_UNIT,
    NO_SAMPLES,
    RESULTS,
    budget_name,
    check_budgets,
    run_rung,
    seed_options,
    seeded,
    shipped,
    validation_splits,
)
from tinyllm.core.config import GPTConfig
from tinyllm.core.defaults import SEED, check_seed
from tinyllm.core.model import GPT
from tinyllm.errors import TinyLLMError, one_line
from tinyllm.files import check_writable_folder, read_record, user_path, write_record
from tinyllm.training.cli import RunFolders
from tinyllm.training.precision import cpu_name

SHAPE = re.compile(r"^(\d+)x(\d+)$")


def head_width(config: str) -> int:
    """The config's channels per head, n_embd / n_head (GPTConfig's defaults where it names neither): every size
    keeps it, so the sizes differ in depth and width, not in how attention splits them."""
    try:
        recipe = yaml.safe_load(Path(config).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise TinyLLMError(f"--config {config} is not a readable YAML config ({one_line(str(e))})") from None
    model = (recipe or {}).get("model", {}) if isinstance(recipe, dict) or recipe is None else None
    arch = model.get("arch", {}) if isinstance(model, dict) else None
    if not isinstance(arch, dict):
        raise TinyLLMError(f"--config {config}: model.arch is not a section of options (n_layer, n_embd, ...)")
    defaults = GPTConfig()
    n_embd, n_head = arch.get("n_embd", defaults.n_embd), arch.get("n_head", defaults.n_head)
    whole = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (n_embd, n_head))
    if not whole or n_embd % n_head:
        raise TinyLLMError(f"--config {config}: model.arch.n_embd {n_embd!r} is not a positive multiple of "
                           f"n_head {n_head!r}")  # fmt: skip
    return n_embd // n_head


def shape_of(size: str, width: int) -> tuple[int, int]:
    """``"4x128"`` → (n_layer, n_embd), refused in one line unless n_embd is a multiple of the head width."""
    m = SHAPE.match(size)
    if not m or int(m[1]) < 1 or int(m[2]) < width or int(m[2]) % width:
        raise TinyLLMError(f"--sizes: {size!r} is not LAYERSxWIDTH with WIDTH a multiple of the config's head "
                           f"width, {width} (e.g. 4x{4 * width})")  # fmt: skip
    return int(m[1]), int(m[2])


def shape_args(size: str, width: int) -> list[str]:
    n_layer, n_embd = shape_of(size, width)
    return ["--model.arch.n_layer", str(n_layer), "--model.arch.n_embd", str(n_embd),
            "--model.arch.n_head", str(n_embd // width)]  # fmt: skip


def point(config: str, width: int, size: str, minutes: float, seed: int) -> dict[str, Any]:
    """One (size, budget) run, trained once: a finished run's figures are kept beside its checkpoints."""
    name = seeded(f"scaling-{Path(config).stem}/{size}-{budget_name(minutes)}", seed)
    extra = [*shape_args(size, width), *seed_options(seed), *NO_SAMPLES]
    done = RunFolders(name).checkpoints / "scaling.json"
    if done.exists():
        row = read_record(done, dict, ("config", "options"))
        if row.get("config") != config or row.get("options") != extra:
            raise TinyLLMError(f"{done.parent} holds a run of another configuration: move it away, or run the "
                               "experiment from another working directory")  # fmt: skip
        return row
    row = run_rung(config, minutes, extra, name=name)
    with torch.device("meta"):  # the count, without the weights
        row["parameters"] = GPT(GPTConfig.from_dict(row["arch"])).num_parameters()
    row.update(size=size, seed=seed, config=config)
    write_record(done, row)
    return row


# ----------------------------------------------------------------------------- the fits


def fit_loss(n: np.ndarray, d: np.ndarray, loss: np.ndarray) -> dict[str, float]:
    """E, A, α, B, β of L = E + A/N^α + B/D^β, least squares over a grid of exponents.

    For fixed exponents the model is linear in (E, A, B), so each grid point is
    one small non-negative least-squares solve (a term that would be negative
    is dropped instead); the best grid point wins. (Chinchilla fits a Huber loss
    with L-BFGS; with tens of points a grid is exact enough.)
    """
    best: dict[str, float] = {"sse": math.inf, "alpha": 0.75, "beta": 0.75}
    for step, span in ((0.05, 0.75), (0.005, 0.05)):  # a coarse grid over (0, 1.5], then a fine one around its best
        alphas, betas = (np.arange(best[k] - span, best[k] + span + step / 2, step) for k in ("alpha", "beta"))
        for alpha in alphas[alphas > 0]:
            for beta in betas[betas > 0]:
                x = np.stack([np.ones_like(n), n**-alpha, d**-beta], axis=1)
                coef, sse = _nonnegative_lstsq(x, loss)
                if sse < best["sse"]:
                    best = {"E": coef[0], "A": coef[1], "alpha": alpha, "B": coef[2], "beta": beta, "sse": sse}
    best["rmse"] = math.sqrt(best["sse"] / len(loss))
    return {k: float(v) for k, v in best.items()}


def _nonnegative_lstsq(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """min ‖x·c - y‖² over c ≥ 0, for a few columns: the best of the plain solves over every subset of columns."""
    best, best_sse = np.zeros(x.shape[1]), float((y**2).sum())
    for subset in range(1, 2 ** x.shape[1]):
        cols = [j for j in range(x.shape[1]) if subset >> j & 1]
        c, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        if (c >= 0).all():
            sse = float(((x[:, cols] @ c - y) ** 2).sum())
            if sse < best_sse:
                best, best_sse = np.zeros(x.shape[1]), sse
                best[cols] = c
    return best, best_sse


def fit_tokens(n: np.ndarray, minutes: np.ndarray, d: np.ndarray) -> dict[str, float]:
    """log D = log c - p·log N + q·log T: the tokens this machine trains, by size and budget."""
    x = np.stack([np.ones_like(n), -np.log(n), np.log(minutes)], axis=1)
    (log_c, p, q), *_ = np.linalg.lstsq(x, np.log(d), rcond=None)
    return {"c": float(math.exp(log_c)), "p": float(p), "q": float(q)}


def predict(loss_fit: dict[str, float], tokens_fit: dict[str, float], n: np.ndarray, minutes: float) -> np.ndarray:
    d = tokens_fit["c"] * n ** -tokens_fit["p"] * minutes ** tokens_fit["q"]
    return loss_fit["E"] + loss_fit["A"] * n ** -loss_fit["alpha"] + loss_fit["B"] * d ** -loss_fit["beta"]


def frontier(loss_fit: dict[str, float], tokens_fit: dict[str, float], minutes: float,
             n_range: tuple[float, float]) -> tuple[float, float]:  # fmt: skip
    """The size N* with the lowest predicted loss in ``minutes``, searched over ``n_range``, and that loss."""
    n = np.geomspace(*n_range, 400)
    losses = predict(loss_fit, tokens_fit, n, minutes)
    i = int(np.argmin(losses))
    return float(n[i]), float(losses[i])


# ----------------------------------------------------------------------------- the report


def nearest(rows: list[dict[str, Any]], n: float) -> str:
    """The measured shape whose parameter count is nearest to ``n`` on a log scale."""
    return min(rows, key=lambda r: abs(math.log(r["parameters"] / n)))["size"]


def report(rows: list[dict[str, Any]], config: str, width: int, minutes: list[float], ask: list[float],
           min_steps: int, out: Path) -> dict:  # fmt: skip
    fitted = [r for r in rows if r["steps"] >= min_steps]
    if len(fitted) < 6:
        raise TinyLLMError(f"only {len(fitted)} points trained {min_steps} steps or more, too few to fit 5 constants: "
                           "give the sizes more --minutes, or lower --min_steps")  # fmt: skip
    n, t = np.array([r["parameters"] for r in fitted], float), np.array([r["budget_min"] for r in fitted], float)
    d, loss = np.array([r["tokens"] for r in fitted], float), np.array([r["val_loss"] for r in fitted])
    loss_fit, tokens_fit = fit_loss(n, d, loss), fit_tokens(n, t, d)
    n_range = (n.min() / 4, n.max() * 4)
    best = [{"minutes": m, "parameters": (nf := frontier(loss_fit, tokens_fit, m, n_range))[0], "loss": nf[1],
             "nearest": nearest(rows, nf[0]), "extrapolated": not min(minutes) <= m <= max(minutes)}
            for m in sorted({*minutes, *ask})]  # fmt: skip
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    table = {(r["size"], r["budget_min"]): r for r in rows}
    lines = [
        f"# The size that fits a budget: `python -m tinyllm experiment scaling --config {config}`",
        "",
        f"Measured on {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, one seed per point. "
        f"Each cell trains `{config}` at that shape (heads of {width} channels) for that many minutes of "
        f"training time and gives the final val loss ({LOSS_UNIT}, over {validation_splits(rows)}) and the "
        "optimizer steps it bought. "
        f"The fit leaves out the points marked *, which trained fewer than {min_steps} steps: a model still "
        "in (or just out of) its warmup is not yet on the law.",
        "",
        "| shape | parameters | " + " | ".join(f"{m:g} min" for m in minutes) + " |",
        "|---|---:|" + "---:|" * len(minutes),
    ]
    for size in sizes:
        cells = [f"{table[size, m]['val_loss']:.4f} ({table[size, m]['steps']:,})"
                 + ("*" if table[size, m]["steps"] < min_steps else "") if (size, m) in table else "–"
                 for m in minutes]  # fmt: skip
        params = next(r["parameters"] for r in rows if r["size"] == size)
        lines.append(f"| {size} | {params / 1e6:.2f} M | " + " | ".join(cells) + " |")
    f = loss_fit
    lines += [
        "",
        f"Fit over {len(fitted)} points (rmse {f['rmse']:.4f}): "
        f"L(N, D) = {f['E']:.3f} + {f['A']:.3g} / N^{f['alpha']:.2f} "
        f"+ {f['B']:.3g} / D^{f['beta']:.2f}; tokens D = {tokens_fit['c']:.3g} · N^-{tokens_fit['p']:.2f} · "
        f"minutes^{tokens_fit['q']:.2f} on this machine.",
        "",
        "| budget | best size N* | predicted val loss | nearest measured shape |",
        "|---|---:|---:|---|",
    ]
    for b in best:
        note = " (extrapolated)" if b["extrapolated"] else ""
        size = f"{b['parameters'] / 1e6:.2f} M"
        lines.append(f"| {b['minutes']:g} min{note} | {size} | {b['loss']:.3f} | {b['nearest']} |")
    (out / "scaling.md").write_text("\n".join(lines) + "\n")
    _plot(rows, minutes, loss_fit, tokens_fit, best, n_range, min_steps, out / "scaling.png")
    summary = {"config": config, "machine": cpu_name(), "fit": {"loss": loss_fit, "tokens": tokens_fit},
               "frontier": best, "rows": rows}  # fmt: skip
    (out / "scaling.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _plot(rows, minutes, loss_fit, tokens_fit, best, n_range, min_steps, path: Path) -> None:  # noqa: ANN001
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    grid = np.geomspace(*n_range, 200)
    for i, m in enumerate(minutes):
        pts = sorted((r["parameters"], r["val_loss"], r["steps"] >= min_steps) for r in rows if r["budget_min"] == m)
        ax.plot([p for p, _, on in pts if on], [v for _, v, on in pts if on], "o", color=f"C{i}",
                label=f"{m:g} min, measured")
        ax.plot([p for p, _, on in pts if not on], [v for _, v, on in pts if not on], "o", mfc="none", color=f"C{i}")
        ax.plot(grid, predict(loss_fit, tokens_fit, grid, m), "--", color=f"C{i}", lw=1)
    ax.plot([b["parameters"] for b in best], [b["loss"] for b in best], "k*-", ms=10,
            label="best size per budget (fit)")
    ax.set_xscale("log")
    ax.set(xlabel="parameters N", ylabel=LOSS_AXIS,
           title=f"The size that fits a CPU budget (hollow: under {min_steps} steps, not fitted)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def scaling(
    config: str = CPU_RECIPE,
    sizes: list[str] = ["2x64", "3x96", "4x128", "6x192", "8x320"],
    minutes: list[float] = [0.5, 1, 2],
    ask: list[float] = [5, 30],
    min_steps: int = 100,
    seed: int = SEED,
    out: str = RESULTS,
) -> None:
    """The size that fits a budget: a grid of model sizes at several time budgets, a Chinchilla fit and its frontier.

    Args:
        config: the recipe every point trains (a CPU recipe meant for any max_time), reshaped per size.
        sizes: shapes as LAYERSxWIDTH, WIDTH a multiple of the config's channels per head (32 by default: 0.1M to
            10M parameters).
        minutes: the budgets every size trains for.
        ask: more budgets to read off the fit (beyond the measured ones: extrapolated, and marked so).
        min_steps: points that trained fewer optimizer steps are shown but left out of the fit (the CPU recipe warms
            up for 50).
        seed: the seed of every run.
        out: where scaling.md, scaling.png and scaling.json go.
    """
    check_writable_folder(user_path(out), "--out")
    check_budgets(minutes)
    if ask:  # none: the frontier at the measured budgets only
        check_budgets(ask, "--ask", trained=False)  # read off the fit, never trained: a repeat does no harm
    check_seed(seed, "--seed")
    if len(set(sizes)) < 3 or len(set(minutes)) < 2:
        raise TinyLLMError("--sizes needs 3 or more shapes and --minutes 2 or more budgets to fit a frontier")
    config = shipped(config)
    width = head_width(config)
    for size in sizes:
        shape_of(size, width)
    rows = [point(config, width, size, m, seed) for size in sizes for m in minutes]
    folder = user_path(out)
    folder.mkdir(parents=True, exist_ok=True)
    report(rows, config, width, minutes, ask, min_steps, folder)
    print((folder / "scaling.md").read_text())
    print(f"wrote {folder / 'scaling.md'}, {folder / 'scaling.png'} and {folder / 'scaling.json'}")
