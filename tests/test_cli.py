"""End-to-end tests of ``python -m tinyllm`` (fit, validate, generate, errors, DDP), in subprocesses.

One tiny training run (tests/configs/tiny.yaml: 2 layers x 32 wide, 24 steps) is shared by
every test that needs a trained checkpoint (module-scoped ``fit_run``). Tests that run
``validate`` work in a copy of that run's folder, because validate appends to logs/tiny.
"""

from __future__ import annotations

import math
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
PLAIN_TYPES = (dict, list, tuple, str, int, float, bool, type(None))


def run_cli(*args: object, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m tinyllm ARGS`` in ``cwd``, with the test session's environment."""
    env = os.environ.copy()  # the conftest put TINYLLM_DATA_DIR and TINYLLM_CACHE_DIR here
    # These models are tiny: one BLAS/OpenMP thread per process is as fast, and it keeps a busy
    # 2-core machine from stalling in OpenMP barriers (a 2-thread matmul there can take 100x longer).
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, "-m", "tinyllm", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """The end of a failed command's output, for assertion messages."""
    return f"exit {proc.returncode}\n--- stdout (tail) ---\n{proc.stdout[-2000:]}\n--- stderr (tail) ---\n{proc.stderr[-4000:]}"


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1, f"expected one TensorBoard events file in {run_dir}, found {events}"
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def best_model_score(ckpt: dict) -> float:
    """best_model_score of the ModelCheckpoint callback that monitors val_loss."""
    scores = [
        float(state["best_model_score"])
        for key, state in ckpt["callbacks"].items()
        if key.startswith("ModelCheckpoint") and "'monitor': 'val_loss'" in key
    ]
    assert len(scores) == 1, f"expected one val_loss ModelCheckpoint state, got keys {list(ckpt['callbacks'])}"
    return scores[0]


def reported_val_loss(stdout: str) -> float:
    """val_loss from the results table that ``validate`` prints (``val_loss   3.59...``)."""
    # Lightning prints a plain table, or a box-drawn one when `rich` is installed (transformers brings it).
    values = re.findall(r"^\W*val_loss\W+([-+0-9.eE]+)\W*$", stdout, flags=re.MULTILINE)
    assert len(values) == 1, f"expected one val_loss row in validate's output:\n{stdout[-2000:]}"
    return float(values[0])


def assert_plain(value: object, where: str = "hyper_parameters") -> None:
    assert isinstance(value, PLAIN_TYPES), f"{where} is a {type(value).__name__}, not a plain type"
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), f"{where} has a non-string key {k!r}"
            assert_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            assert_plain(v, f"{where}[{i}]")


# ----------------------------------------------------------------------------- the shared fit run


@dataclass
class FitRun:
    dir: Path
    proc: subprocess.CompletedProcess[str]
    files: set[str]  # every file the run wrote, relative to dir, taken right after it finished
    scalars: dict[str, list[tuple[int, float]]]


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory: pytest.TempPathFactory) -> FitRun:
    run_dir = tmp_path_factory.mktemp("fit")
    proc = run_cli("fit", "--config", TINY, cwd=run_dir)
    assert proc.returncode == 0, describe(proc)
    files = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    return FitRun(run_dir, proc, files, read_scalars(run_dir / "logs" / "tiny"))


@pytest.fixture
def fit_copy(fit_run: FitRun, tmp_path: Path) -> Path:
    """A private copy of the fit run's folder (validate writes into logs/tiny)."""
    dest = tmp_path / "run"
    shutil.copytree(fit_run.dir, dest)
    return dest


# ----------------------------------------------------------------------------- 1. fit


def test_fit_writes_checkpoints_logs_and_config(fit_run: FitRun):
    ckpts = {f for f in fit_run.files if f.startswith("checkpoints")}
    assert ckpts == {"checkpoints/tiny/last.ckpt", "checkpoints/tiny/best.ckpt"}, ckpts
    logs = {f for f in fit_run.files if f.startswith("logs")}
    # One run directory, logs/tiny itself (version ""), with no version_N below it.
    assert {Path(f).parent for f in logs} == {Path("logs/tiny")}, logs
    assert "logs/tiny/config.yaml" in logs
    assert len([f for f in logs if Path(f).name.startswith("events.out.tfevents.")]) == 1, logs

    saved = yaml.safe_load((fit_run.dir / "logs/tiny/config.yaml").read_text())
    assert saved["model"]["arch"]["n_layer"] == 2 and saved["data"]["batch_size"] == 8
    assert saved["trainer"]["max_steps"] == 24


def test_fit_chooses_precision_automatically(fit_run: FitRun):
    from tinyllm.precision import choose_precision

    expected, _ = choose_precision("auto")  # 32-true on a CPU without AMX/AVX512-BF16, like CI's
    assert f"tinyllm: precision auto -> {expected} (" in fit_run.proc.stderr, fit_run.proc.stderr[-3000:]
    # The choice is what the run actually used: it is in the saved config.
    saved = yaml.safe_load((fit_run.dir / "logs/tiny/config.yaml").read_text())
    assert saved["trainer"]["precision"] == expected


def test_fit_logs_losses_perplexity_and_lr(fit_run: FitRun):
    scalars = fit_run.scalars
    for tag in ("train_loss", "val_loss", "val_ppl"):
        assert scalars.get(tag), f"no {tag} in {sorted(scalars)}"
    lr_tags = [t for t in scalars if t.startswith("lr")]
    assert lr_tags, f"no learning-rate tag in {sorted(scalars)}"

    # val_check_interval 8 over 24 steps: three evaluations; perplexity = exp(loss).
    assert [step for step, _ in scalars["val_loss"]] == [7, 15, 23]
    for (_, loss), (_, ppl) in zip(scalars["val_loss"], scalars["val_ppl"]):
        assert ppl == pytest.approx(math.exp(loss), rel=1e-4)
    assert len(scalars["train_loss"]) == 24 // 2  # log_every_n_steps 2
    assert all(math.isfinite(v) for _, v in scalars["train_loss"])

    # Warmup to lr=2e-3 within 4 steps, then cosine down towards min_lr=2e-4.
    lrs = [v for _, v in scalars[lr_tags[0]]]
    assert max(lrs) == pytest.approx(2e-3, rel=1e-4)
    assert all(2e-4 * (1 - 1e-4) <= v <= 2e-3 * (1 + 1e-4) for v in lrs)
    peak = lrs.index(max(lrs))
    assert lrs[peak:] == sorted(lrs[peak:], reverse=True) and lrs[-1] < 2.5e-4


# ----------------------------------------------------------------------------- 2. validate


def test_validate_best_reports_the_checkpoints_best_val_loss(fit_copy: Path, fit_run: FitRun):
    best = best_model_score(load_ckpt(fit_copy / "checkpoints/tiny/best.ckpt"))
    assert best == pytest.approx(min(v for _, v in fit_run.scalars["val_loss"]), rel=1e-5)

    proc = run_cli("validate", "--config", TINY, "--ckpt_path", "checkpoints/tiny/best.ckpt", cwd=fit_copy)
    assert proc.returncode == 0, describe(proc)
    assert reported_val_loss(proc.stdout) == pytest.approx(best, rel=1e-5)


def test_validate_last_resolves_to_the_final_weights(fit_copy: Path, fit_run: FitRun):
    proc = run_cli("validate", "--config", TINY, "--ckpt_path", "last", cwd=fit_copy)
    assert proc.returncode == 0, describe(proc)
    assert "last.ckpt" in proc.stderr, proc.stderr[-2000:]  # "Restoring states from ... last.ckpt"
    final_val_loss = fit_run.scalars["val_loss"][-1][1]  # the evaluation at step 24, same weights as last.ckpt
    assert reported_val_loss(proc.stdout) == pytest.approx(final_val_loss, rel=1e-5)


# ----------------------------------------------------------------------------- 3. checkpoint contents


@pytest.mark.parametrize("name", ["last.ckpt", "best.ckpt"])
def test_checkpoints_load_safely_with_plain_hyperparameters(fit_run: FitRun, name: str):
    ckpt = load_ckpt(fit_run.dir / "checkpoints/tiny" / name)  # weights_only=True: no pickled objects
    hp = ckpt["hyper_parameters"]
    assert_plain(hp)
    assert isinstance(hp["arch"], dict) and isinstance(hp["tokenizer"], dict)
    assert hp["arch"]["vocab_size"] == 65 and hp["arch"]["block_size"] == 32
    assert (hp["arch"]["n_layer"], hp["arch"]["n_head"], hp["arch"]["n_embd"]) == (2, 2, 32)
    assert hp["tokenizer"]["kind"] == "char"
    assert ckpt["global_step"] == 24
    # The data position is stored, so a resume continues the window stream where it stopped.
    assert ckpt["ShakespeareDataModule"] == {"train_batches_done": 24}


# ----------------------------------------------------------------------------- 4, 5. print_config, overrides


def test_print_config_round_trips(tmp_path: Path):
    first = run_cli("fit", "--config", TINY, "--print_config", cwd=tmp_path)
    assert first.returncode == 0, describe(first)
    (tmp_path / "printed.yaml").write_text(first.stdout)
    second = run_cli("fit", "--config", "printed.yaml", "--print_config", cwd=tmp_path)
    assert second.returncode == 0, describe(second)
    assert second.stdout == first.stdout
    cfg = yaml.safe_load(first.stdout)
    assert cfg["model"]["arch"]["n_embd"] == 32 and cfg["trainer"]["max_steps"] == 24
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "logs").exists()  # nothing was run


def test_command_line_overrides_win_over_the_config(tmp_path: Path):
    proc = run_cli(
        "fit", "--config", TINY, "--trainer.max_steps", "4", "--data.batch_size", "4", "--model.arch.n_layer", "1",
        "--print_config", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["trainer"]["max_steps"] == 4
    assert cfg["data"]["batch_size"] == 4
    assert cfg["model"]["arch"]["n_layer"] == 1
    # Untouched values still come from the config file.
    assert cfg["model"]["arch"]["n_head"] == 2 and cfg["trainer"]["val_check_interval"] == 8


# ----------------------------------------------------------------------------- 6. user errors


BAD_INPUTS = [
    pytest.param(["fit", "--model.arch.n_embd", "30", "--model.arch.n_head", "4"], ["n_embd=30", "n_head=4"],
                 id="n_embd-not-divisible-by-n_head"),
    pytest.param(["fit", "--model.arch.norm", "batchnorm"], ["norm", "batchnorm", "rmsnorm"], id="unknown-norm"),
    pytest.param(["fit", "--data.path", "does/not/exist.txt"], ["does/not/exist.txt"], id="missing-data-file"),
    pytest.param(["validate", "--ckpt_path", "checkpoints/tiny/missing.ckpt"], ["missing.ckpt"], id="missing-checkpoint"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "mentions"), BAD_INPUTS)
def test_bad_input_fails_with_one_clear_line(tmp_path: Path, args: list[str], mentions: list[str]):
    command, *rest = args
    proc = run_cli(command, "--config", TINY, *rest, cwd=tmp_path, timeout=120)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert proc.returncode == 2, describe(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tinyllm: error:")]
    assert len(errors) == 1, describe(proc)
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0], "the error line should be the last word"
    for word in mentions:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"


# ----------------------------------------------------------------------------- 7. help


def test_help_lists_the_commands(tmp_path: Path):
    proc = run_cli("--help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, describe(proc)
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ") and line.strip()}
    assert {"fit", "validate", "generate"} <= listed, proc.stdout


# ----------------------------------------------------------------------------- 8. generate


@pytest.mark.parametrize(
    "sampling",
    [
        pytest.param(["--max_new_tokens", "20", "--temperature", "0"], id="greedy"),
        # Sampled, with the same seed, and past block_size=32 (the context window slides).
        pytest.param(["--max_new_tokens", "40", "--temperature", "1.0", "--seed", "7"], id="sampled-past-context"),
    ],
)
def test_generate_same_text_with_and_without_kv_cache(fit_run: FitRun, sampling: list[str]):
    ckpt = fit_run.dir / "checkpoints/tiny/last.ckpt"
    outs = {}
    for kv in ("true", "false"):
        proc = run_cli("generate", "--ckpt_path", ckpt, "--prompt", "ROMEO:", *sampling, "--kv_cache", kv,
                       cwd=fit_run.dir, timeout=120)  # fmt: skip
        assert proc.returncode == 0, describe(proc)
        assert f"kv_cache={kv.capitalize()}" in proc.stderr
        outs[kv] = proc.stdout
    assert outs["true"] == outs["false"]
    n_new = int(sampling[1])
    assert outs["true"].startswith("ROMEO:") and len(outs["true"]) == len("ROMEO:") + n_new + 1  # chars + "\n"


def test_generate_int8_prints_text_and_compile_without_cache_is_one_line(fit_run: FitRun):
    ckpt = fit_run.dir / "checkpoints/tiny/last.ckpt"
    proc = run_cli("generate", "--ckpt_path", ckpt, "--max_new_tokens", "40", "--temperature", "0",
                   "--quantize", "int8", cwd=fit_run.dir, timeout=120)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert "quantize=int8" in proc.stderr
    assert proc.stdout.startswith("ROMEO:") and len(proc.stdout) == len("ROMEO:") + 40 + 1
    proc = run_cli("generate", "--ckpt_path", ckpt, "--compile", "true", "--kv_cache", "false", cwd=fit_run.dir)
    _assert_one_line_error(proc, "--compile", "--kv_cache true")


# ----------------------------------------------------------------------------- 9. DDP and per-rank data


def test_ddp_two_cpu_processes(tmp_path: Path):
    proc = run_cli(
        "fit", "--config", TINY, "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy", "ddp", "--trainer.max_steps", "8", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert "GLOBAL_RANK: 1" in proc.stderr and "Starting with 2 processes" in proc.stderr, proc.stderr[-3000:]

    ckpts = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "checkpoints").rglob("*") if p.is_file())
    assert ckpts == ["checkpoints/tiny/best.ckpt", "checkpoints/tiny/last.ckpt"]  # no last-v1.ckpt from rank 1
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["tiny"]
    assert not [p for p in (tmp_path / "logs/tiny").iterdir() if p.is_dir()]  # no version_N
    scalars = read_scalars(tmp_path / "logs/tiny")  # asserts exactly one events file (rank 0 only)
    assert [step for step, _ in scalars["val_loss"]] == [7]

    last = load_ckpt(tmp_path / "checkpoints/tiny/last.ckpt")
    assert last["global_step"] == 8
    assert last["ShakespeareDataModule"] == {"train_batches_done": 8}


def test_random_windows_differ_between_ranks():
    from tinyllm.data import RandomWindows

    tokens = torch.arange(5000)  # a window's values are its positions, so x identifies where it was drawn
    rank0 = RandomWindows(tokens, block_size=32, batch_size=8, seed=1337, rank=0)
    rank1 = RandomWindows(tokens, block_size=32, batch_size=8, seed=1337, rank=1)
    for k in range(3):
        (x0, y0), (x1, y1) = rank0.batch(k), rank1.batch(k)
        assert x0.shape == x1.shape == (8, 32)
        assert not torch.equal(x0, x1), f"ranks 0 and 1 drew the same windows for batch {k}"
        assert torch.equal(y0[:, :-1], x0[:, 1:]) and torch.equal(y1[:, :-1], x1[:, 1:])
    # Batch k is a pure function of (seed, rank, k): the same rank draws it again identically.
    again = RandomWindows(tokens, block_size=32, batch_size=8, seed=1337, rank=1)
    assert torch.equal(again.batch(2)[0], rank1.batch(2)[0])
    # And the endless stream yields batch 0, 1, 2, ... from `start`.
    stream = iter(RandomWindows(tokens, block_size=32, batch_size=8, seed=1337, rank=1, start=1))
    assert torch.equal(next(stream)[0], rank1.batch(1)[0])


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], *mentions: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tinyllm: error: "), last
    for m in mentions:
        assert m in last, (m, last)
    return last


def test_corrupt_checkpoint_for_validate_is_one_line(tmp_path: Path):
    (tmp_path / "broken.ckpt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    proc = run_cli("validate", "--config", TINY, "--ckpt_path", "broken.ckpt", cwd=tmp_path, timeout=120)
    _assert_one_line_error(proc, "broken.ckpt", "not a readable checkpoint")


def test_bad_callback_option_in_the_config_is_one_line(tmp_path: Path):
    text = TINY.read_text()
    # The sample prompt holds a character Tiny Shakespeare lacks: refused at start-up, not at the first sample.
    (tmp_path / "prompt.yaml").write_text(text.replace('prompt: "ROMEO:"', 'prompt: "ROMEO§"'))
    proc = run_cli("fit", "--config", "prompt.yaml", cwd=tmp_path, timeout=120)
    _assert_one_line_error(proc, "§")
    assert not list(tmp_path.rglob("*.ckpt"))
    (tmp_path / "every.yaml").write_text(text.replace("every_n_train_steps: 8", "every_n_train_steps: 0"))
    proc = run_cli("fit", "--config", "every.yaml", cwd=tmp_path, timeout=120)
    _assert_one_line_error(proc, "every_n_train_steps")
    # Two stateful callbacks of one kind: Lightning's RuntimeError, as one line too.
    proc = run_cli("fit", "--config", TINY, "--trainer.callbacks+=tinyllm.callbacks.RNGState", cwd=tmp_path)
    _assert_one_line_error(proc, "RNGState")


def test_unknown_device_for_generate_is_one_line(fit_run: FitRun, tmp_path: Path):
    proc = run_cli("generate", "--ckpt_path", fit_run.dir / "checkpoints/tiny/last.ckpt", "--device", "gpu",
                   "--max_new_tokens", "2", cwd=tmp_path)  # fmt: skip
    _assert_one_line_error(proc, "--device")


def test_plot_turns_the_run_logs_into_a_png(fit_run: FitRun, tmp_path: Path):
    proc = run_cli("plot", "--logdir", fit_run.dir / "logs/tiny", "--out", tmp_path / "curves.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = run_cli("plot", "--logdir", tmp_path, cwd=tmp_path)  # a folder with no TensorBoard events
    _assert_one_line_error(proc, "no TensorBoard event files")


def test_bench_commands_print_and_write_their_figures(fit_run: FitRun, tmp_path: Path):
    proc = run_cli("bench", "generate", "--ckpt_path", fit_run.dir / "checkpoints/tiny/last.ckpt",
                   "--lengths", "[5, 40]", "--setups", "[fp32, int8]", "--json", tmp_path / "gen.json",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "gen.json").read_text())["results"]
    # 40 > block_size 32: the window moves
    assert [(r["setup"], r["new_tokens"]) for r in rows] == [("fp32", 5), ("fp32", 40), ("int8", 5), ("int8", 40)]
    assert all(r["cached_tokens_per_s"] > 0 and r["recompute_tokens_per_s"] > 0 for r in rows)
    proc = run_cli("bench", "train", "--config", TINY, "--steps", "2", "--warmup", "0", "--rounds", "1",
                   "--json", tmp_path / "train.json", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads((tmp_path / "train.json").read_text())["results"]
    assert row["tokens_per_step"] == 8 * 32 and row["parameters"] > 0
    assert 0 < row["plain_mfu"] < 1 and 0 < row["lightning_mfu"] < 1 and row["matmul_peak_gflops"] > 0
    assert 0 <= row["plain_system_cpu_share"] < 1 and 0 <= row["lightning_system_cpu_share"] < 1
    assert "Lightning overhead" in proc.stdout


def test_card_measures_the_checkpoint_and_shows_samples(fit_run: FitRun, tmp_path: Path):
    proc = run_cli("card", "--ckpt_path", fit_run.dir / "checkpoints/tiny/last.ckpt", "--out", "card/MODEL_CARD.md",
                   "--samples", "2", "--max_new_tokens", "30", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    text = (tmp_path / "card/MODEL_CARD.md").read_text()
    # The whole validation split, computed here independently (the tiny run itself evaluates 4 batches only).
    from tinyllm.checkpoint import load_model
    from tinyllm.data import ShakespeareDataModule

    model = load_model(fit_run.dir / "checkpoints/tiny/last.ckpt", torch.device("cpu")).model
    data = ShakespeareDataModule(tokenizer="char", block_size=32, batch_size=512)
    data.setup("validate")
    total, n = 0.0, 0
    with torch.inference_mode():
        for x, y in data.val_dataloader():
            total += torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
            n += y.numel()
    found = re.search(r"\*\*(\d+\.\d+)\*\* \(perplexity [\d.]+\), measured on these weights over the whole "
                      r"held-out split \(the last 10% of Tiny Shakespeare, ([\d,]+) tokens\)", text)
    assert found, text[:3000]
    assert float(found[1]) == pytest.approx(total / n, abs=1e-4)  # the card rounds to 4 decimals
    assert int(found[2].replace(",", "")) == n
    assert "generated by `tinyllm card`" in text and "## Files" not in text
    assert "| parameters | " in text and "| context | 32 tokens |" in text
    samples = re.findall(r"```text\n(.*?)\n```", text, flags=re.S)
    assert len(samples) == 2 and all(s.startswith("ROMEO:") and len(s) == len("ROMEO:") + 30 for s in samples)
    assert samples[0] != samples[1]  # seeds 1337 and 1338
    proc = run_cli("card", "--ckpt_path", tmp_path / "missing.ckpt", cwd=tmp_path)
    _assert_one_line_error(proc, "missing.ckpt")
