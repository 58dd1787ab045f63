"""``experiment tokenizers``: which tokenizer buys the best model in a time budget, on one scale (bits per byte).

    python -m tinyllm experiment tokenizers --config configs/cpu.yaml --minutes 5 \\
        --tokenizers "[char, bpe:257, bpe:1024, bpe:4096, gpt2]" --seeds "[1337]"

Each tokenizer prepares the same text (Tiny Shakespeare unless ``--inputs``)
into its own dataset folder, then every (tokenizer, seed) is an ordinary
``fit`` of the config with that folder and a time budget, run as its own
process (``runs.run_rung``, as every rung of ``experiment budgets``).
Validation loss is per token, and a token is a character for ``char`` but
several bytes for a BPE, so the table compares ``val_bpb``: bits per UTF-8
byte of the same validation text.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from tinyllm.commands.runs import (
    CPU_RECIPE,
    NO_SAMPLES,
    RESULTS,
    check_budgets,
    check_seeds,
    mean_sd,
    run_rung,
    seed_options,
    seeded,
    shipped,
)
from tinyllm.commands.prepare import prepare
from tinyllm.core.dataset import open_dataset
from tinyllm.core.defaults import SEED
from tinyllm.core.tokenizers import parse_tokenizer_spec
from tinyllm.errors import TinyLLMError
from tinyllm.files import check_writable_folder, shakespeare_path, user_path
from tinyllm.training.precision import cpu_name


def _folder_name(tokenizer: str) -> str:
    return tokenizer.replace(":", "")


def write_report(rows: list[dict[str, Any]], config: str, minutes: float, out: Path) -> None:
    lines = [
        f"# Tokenizers in a {minutes:g}-minute budget: `python -m tinyllm experiment tokenizers --config {config}`",
        "",
        f"Measured on {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}. Each row trains "
        f"`{config}` for {minutes:g} minutes of training time on the same text, tokenized its way. val bpb: bits per "
        "UTF-8 byte of the validation text (val loss / ln 2 / bytes per token), the scale every tokenizer shares; "
        "val loss is per token and does not compare across rows. Mean ± sd over the seeds.",
        "",
        "| tokenizer | vocabulary | seeds | val bpb | val loss (nats/token) | steps | tokens/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        runs = r["runs"]
        speed = [x["tokens_per_s"] for x in runs if x["tokens_per_s"]]
        bpb = mean_sd([x["val_bpb"] for x in runs])
        lines.append(f"| `{r['tokenizer']}` | {r['vocab_size']:,} | {len(runs)} | **{bpb}** "
                     f"| {mean_sd([x['val_loss'] for x in runs])} | {statistics.fmean(x['steps'] for x in runs):,.0f} "
                     f"| {statistics.fmean(speed) if speed else float('nan'):,.0f} |")  # fmt: skip
    (out / "tokenizers.md").write_text("\n".join(lines) + "\n")
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    names = [r["tokenizer"] for r in rows]
    for i, r in enumerate(rows):
        ys = [x["val_bpb"] for x in r["runs"]]
        ax.scatter([i] * len(ys), ys, color="C0")
        ax.plot([i - 0.2, i + 0.2], [statistics.fmean(ys)] * 2, color="C1", lw=2)
    ax.set_xticks(range(len(rows)), names)
    ax.set(ylabel="val bits per byte (lower is better)",
           title=f"Tokenizers on the same text, {minutes:g} minutes of training each")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "tokenizers.png", dpi=110)


def tokenizers(
    config: str = CPU_RECIPE,
    tokenizers: list[str] = ["char", "bpe:257", "bpe:1024", "bpe:4096", "gpt2"],
    minutes: float = 5,
    seeds: list[int] = [SEED],
    inputs: str | None = None,
    data: str = "data/tokenizers",
    out: str = RESULTS,
) -> None:
    """Which tokenizer trains the best model in a time budget, compared in bits per byte.

    Args:
        config: the recipe every run trains (a CPU recipe meant for any max_time).
        tokenizers: char, gpt2 or bpe:N, each prepared from the same text.
        minutes: the training time of every run.
        seeds: one run per tokenizer and seed.
        inputs: the text (a file, a folder or .jsonl), Tiny Shakespeare by default.
        data: where the prepared folders go, one per tokenizer.
        out: where tokenizers.md, tokenizers.png and tokenizers.json go.
    """
    if not tokenizers or len(set(tokenizers)) != len(tokenizers):
        raise TinyLLMError(f"--tokenizers must list distinct tokenizers, got {tokenizers}")
    for tok in tokenizers:  # all of them before the first trains
        parse_tokenizer_spec(tok)
    check_budgets([minutes])
    check_seeds(seeds)
    config = shipped(config)
    check_writable_folder(user_path(out), "--out")
    source = inputs or str(shakespeare_path())
    rows = []
    for tok in tokenizers:
        folder = user_path(data) / _folder_name(tok)
        prepare(source, str(folder), tokenizer=tok)  # done already: says so and returns
        vocab = open_dataset(folder).vocab_size
        data_options = ["--data.path", str(folder), "--data.tokenizer", tok]  # the folder's own: nothing to note
        runs = [run_rung(config, minutes, [*data_options, *seed_options(seed), *NO_SAMPLES],
                         name=seeded(f"tokenizer-{_folder_name(tok)}", seed))
                for seed in seeds]  # fmt: skip
        rows.append({"tokenizer": tok, "vocab_size": vocab, "runs": runs})
    folder = user_path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_report(rows, config, minutes, folder)
    (folder / "tokenizers.json").write_text(json.dumps({"config": config, "minutes": minutes, "machine": cpu_name(),
                                                         "rows": rows}, indent=2) + "\n")  # fmt: skip
    print((folder / "tokenizers.md").read_text())
