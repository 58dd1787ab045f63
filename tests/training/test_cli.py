"""tinyllm's LightningCLI end to end (fit, validate, the run folder, errors, DDP), in subprocesses."""

from __future__ import annotations

import math
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import FitRun
from tests.helpers.cli import (
    TINY,
    assert_one_line_error,
    assert_plain,
    best_model_score,
    describe,
    load_ckpt,
    read_scalars,
    reported_val_loss,
    run_cli,
    run_main,
)
from tinyllm.commands.plot import read_scalars as read_all_scalars  # of a resumed run's two events files
from tinyllm.training.cli import RunFolders
from tinyllm.training.metrics import TRAIN_LOSS, VAL_LOSS, bpb_in_nats
from tinyllm.training.precision import cpu_has_native_bf16


def test_fit_writes_checkpoints_logs_and_config(fit_run: FitRun):
    ckpts = {f for f in fit_run.files if f.startswith("checkpoints")}
    # The checkpoints, and the lock that kept the run to one process (with who held it).
    assert ckpts == {"checkpoints/tiny/last.ckpt", "checkpoints/tiny/best.ckpt", "checkpoints/tiny/.lock",
                     "checkpoints/tiny/.lock.owner"}, ckpts  # fmt: skip
    logs = {f for f in fit_run.files if f.startswith("logs")}
    # One run directory, logs/tiny itself (version ""), with no version_N below it.
    assert {Path(f).parent for f in logs} == {Path("logs/tiny")}, logs
    assert "logs/tiny/config.yaml" in logs
    assert len([f for f in logs if Path(f).name.startswith("events.out.tfevents.")]) == 1, logs

    saved = yaml.safe_load((fit_run.dir / "logs/tiny/config.yaml").read_text())
    assert saved["model"]["arch"]["n_layer"] == 2 and saved["data"]["batch_size"] == 8
    assert saved["trainer"]["max_steps"] == 24


def test_run_folders_name_the_files_a_fit_writes(fit_run: FitRun):
    # Commands find a run's files through RunFolders: its names are the ones Lightning and the CLI write.
    run = RunFolders("tiny")
    assert {str(p) for p in (run.last, run.best, run.lock, run.lock_owner, run.config)} <= set(fit_run.files)
    assert ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION == run.last.name


def test_fit_prints_no_warning_the_user_cannot_act_on(fit_run: FitRun):
    # A new run's folder holds only its own lock; Lightning's use of a deprecated torch API is not the user's;
    # the summary's float32 size is right under bf16-mixed too (the weights stay float32).
    for noise in ("exists and is not empty", "LeafSpec", "Tip: For seamless cloud logging",
                  "is not supported by the model summary"):
        assert noise not in fit_run.proc.stderr, fit_run.proc.stderr[-3000:]


def test_fit_chooses_precision_automatically(fit_run: FitRun):
    found = re.search(r"^tinyllm: precision auto -> (\S+) \((.*)\)$", fit_run.proc.stderr, flags=re.M)
    assert found, fit_run.proc.stderr[-3000:]
    chosen, why = found[1], found[2]
    if cpu_has_native_bf16():  # measured: the printed timings name the winner
        timings = {p: float(t) for p, t in re.findall(r"(32-true|bf16-mixed) ([\d.]+) s/step", why)}
        # The printed times are rounded: the chosen one is the smallest of them, a tie included.
        assert set(timings) == {"32-true", "bf16-mixed"} and timings[chosen] == min(timings.values()), why
    else:  # CI's kind of CPU: bf16 would be emulated
        assert chosen == "32-true", why
    # The choice is what the run actually used: it is in the saved config.
    saved = yaml.safe_load((fit_run.dir / "logs/tiny/config.yaml").read_text())
    assert saved["trainer"]["precision"] == chosen


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


@pytest.mark.slow
def test_validate_best_reports_the_checkpoints_best_val_loss(fit_copy: Path, fit_run: FitRun):
    best = best_model_score(load_ckpt(fit_copy / "checkpoints/tiny/best.ckpt"))
    assert best == pytest.approx(min(v for _, v in fit_run.scalars["val_loss"]), rel=1e-5)

    proc = run_cli("validate", "--config", TINY, "--ckpt_path", "checkpoints/tiny/best.ckpt", cwd=fit_copy)
    assert proc.returncode == 0, describe(proc)
    assert reported_val_loss(proc.stdout) == pytest.approx(best, rel=1e-5)


@pytest.mark.slow
def test_validate_last_resolves_to_the_final_weights(fit_copy: Path, fit_run: FitRun):
    before = _checksums(fit_copy)
    proc = run_cli("validate", "--config", TINY, "--ckpt_path", "last", cwd=fit_copy)
    assert proc.returncode == 0, describe(proc)
    assert "last.ckpt" in proc.stderr, proc.stderr[-2000:]  # "Restoring states from ... last.ckpt"
    final_val_loss = fit_run.scalars["val_loss"][-1][1]  # the evaluation at step 24, same weights as last.ckpt
    assert reported_val_loss(proc.stdout) == pytest.approx(final_val_loss, rel=1e-5)
    bpb = float(re.findall(r"^\W*val_bpb\W+([-+0-9.eE]+)\W*$", proc.stdout, flags=re.MULTILINE)[0])
    assert f"it is {bpb_in_nats(bpb):.4f} nats" in proc.stdout  # the scale of the README's tables, said once
    assert read_scalars(fit_copy / "logs/tiny") == fit_run.scalars  # fit's curves, without a point at step 0
    assert _checksums(fit_copy) == before  # no config.yaml, no events file


@pytest.mark.slow
def test_validate_refuses_the_default_logger_in_one_line(fit_copy: Path):
    before = _checksums(fit_copy)
    proc = run_main("validate", "--config", TINY, "--ckpt_path", "last", "--trainer.logger", "true", cwd=fit_copy)
    assert_one_line_error(proc, "--trainer.logger CSVLogger")
    assert _checksums(fit_copy) == before


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_printed_config_fed_back_reproduces_the_run(tmp_path: Path):
    original, replay = tmp_path / "original", tmp_path / "replay"
    for d in (original, replay):
        d.mkdir()
    args = ["fit", "--config", TINY, "--trainer.max_steps", "4", "--model.arch.dropout", "0.1"]
    printed = run_cli(*args, "--print_config", cwd=original)
    assert printed.returncode == 0, describe(printed)
    (replay / "printed.yaml").write_text(printed.stdout)
    for cwd, run in ((original, args), (replay, ["fit", "--config", "printed.yaml"])):
        assert (proc := run_cli(*run, cwd=cwd)).returncode == 0, describe(proc)
    a, b = (load_ckpt(d / "checkpoints/tiny/last.ckpt") for d in (original, replay))
    assert a["global_step"] == b["global_step"] == 4
    assert all(torch.equal(t, b["state_dict"][k]) for k, t in a["state_dict"].items())  # the same run, bit for bit


@pytest.mark.slow
def test_another_logger_more_callbacks_and_a_profiler_work_with_the_wired_in_callbacks(tmp_path: Path):
    proc = run_cli("fit", "--config", TINY, "--trainer.max_steps", "8", "--samples.every_n_evals", "1",
                   "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", "csv", "--trainer.logger.name", "tiny",
                   "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", "mine",
                   "--trainer.callbacks.every_n_train_steps", "4", "--trainer.callbacks.save_top_k", "-1",
                   "--trainer.profiler", "simple", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    header = (tmp_path / "csv/tiny/version_0/metrics.csv").read_text().splitlines()[0].split(",")
    assert {TRAIN_LOSS, VAL_LOSS} <= set(header) and any(h.startswith("lr-") for h in header)  # a callback's too
    assert not (tmp_path / "logs").exists()  # TensorBoard only when no other logger is asked for
    assert load_ckpt(tmp_path / "checkpoints/tiny/last.ckpt")["global_step"] == 8  # the wired-in checkpoints
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["epoch=0-step=4.ckpt", "epoch=0-step=8.ckpt"]
    assert "FIT Profiler Report" in proc.stdout + proc.stderr
    assert "--- sample at step 8 ---" in proc.stdout  # samples without TensorBoard: printed only


@pytest.mark.slow
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


BAD_INPUTS = [
    pytest.param(["fit", "--model.arch.n_embd", "30", "--model.arch.n_head", "4"], ["n_embd=30", "n_head=4"],
                 id="n_embd-not-divisible-by-n_head"),
    pytest.param(["fit", "--model.arch.norm", "batchnorm"], ["norm", "batchnorm", "rmsnorm"], id="unknown-norm"),
    pytest.param(["fit", "--data.path", "does/not/exist.txt"], ["does/not/exist.txt"], id="missing-data-file"),
    pytest.param(["validate", "--ckpt_path", "checkpoints/tiny/missing.ckpt"], ["missing.ckpt"], id="missing-checkpoint"),
    pytest.param(["validate", "--ckpt_path", "last"], ["no checkpoints/tiny/last.ckpt"], id="validate-last-of-no-run"),
    pytest.param(["validate"], ["--ckpt_path"], id="validate-without-a-checkpoint"),
    pytest.param(["validate", "--ckpt_path", "."], ["not an exported model"], id="validate-a-plain-folder"),
    pytest.param(["fit", "--trainer.max_time", "abc"], ["abc"], id="unreadable-time-budget"),
    pytest.param(["fit", "--trainer.max_time", "00:00:00:00"], ["time budget of zero"], id="zero-time-budget"),
    pytest.param(["fit", "--trainer.max_steps", "-5"], ["max_steps"], id="negative-max-steps"),
    pytest.param(["fit", "--trainer.val_check_interval", "0"], ["val_check_interval"], id="zero-eval-interval"),
    pytest.param(["fit", "--trainer.accelerator", "gpu"], ["gpu", "leave it auto"], id="gpu-on-a-cpu-machine"),
    pytest.param(["fit", "--trainer.strategy", "single_device", "--trainer.devices", "2"], ["single_device", "ddp"],
                 id="one-process-on-two-devices"),
    pytest.param(["fit", "--trainer.accelerator", "tpu"], ["tpu", "leave it auto"], id="tpu-without-torch-xla"),
    pytest.param(["fit", "--name", "../elsewhere"], ["--name", "../elsewhere"], id="run-name-outside"),
    pytest.param(["fit", "--name", ""], ["--name"], id="empty-run-name"),
    pytest.param(["fit", "--model.arch.block_size", "0"], ["model.arch.block_size", "got 0"], id="zero-context"),
    pytest.param(["fit", "--model.arch.block_size", "1000000"], ["out of memory", "ask for less"], id="huge-context"),
    pytest.param(["fit", "--seed_everything", "-1"], ["--seed_everything", "got -1"], id="negative-seed"),
    pytest.param(["fit", "--data.seed", "4294967296"], ["data.seed", "4,294,967,295"], id="seed-too-large"),
    pytest.param(["fit", "--data.num_workers", "-1"], ["data.num_workers"], id="negative-workers"),
    pytest.param(["fit", "--model.betas", "[1.5, 0.9]"], ["model.betas"], id="beta-above-one"),
    pytest.param(["fit", "--model.muon_lr", "-1"], ["model.muon_lr"], id="negative-muon-lr"),
    pytest.param(["fit", "--throughput.window_size", "1"], ["throughput.window_size"], id="window-of-one"),
    pytest.param(["fit", "--early_stopping.monitor", "val_los"], ["val_los", "val_loss"], id="monitor-typo"),
    pytest.param(["fit", "--config", sys.executable], ["--config", "not UTF-8"], id="binary-config"),
    pytest.param(["fit", "--optimizer", "torch.optim.SGD"], ["--optimizer"], id="generic-optimizer-would-replace-the-recipe"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "mentions"), BAD_INPUTS)
def test_bad_input_fails_with_one_clear_line(tmp_path: Path, args: list[str], mentions: list[str]):
    command, *rest = args
    proc = run_main(command, "--config", TINY, *rest, cwd=tmp_path)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert proc.returncode == 2, describe(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tinyllm: error:")]
    assert len(errors) == 1, describe(proc)
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0], "the error line should be the last word"
    for word in mentions:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path: Path):
    proc = run_cli(
        "fit", "--config", TINY, "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy", "ddp", "--trainer.max_steps", "8", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert "GLOBAL_RANK: 1" in proc.stderr and "Starting with 2 processes" in proc.stderr, proc.stderr[-3000:]
    assert "sync_dist=True" not in proc.stderr  # the evaluation figures are synced already: no advice to sync

    ckpts = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "checkpoints").rglob("*") if p.is_file())
    # No last-v1.ckpt from rank 1, and one lock, rank 0's.
    assert ckpts == ["checkpoints/tiny/.lock", "checkpoints/tiny/.lock.owner", "checkpoints/tiny/best.ckpt",
                     "checkpoints/tiny/last.ckpt"]  # fmt: skip
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["tiny"]
    assert not [p for p in (tmp_path / "logs/tiny").iterdir() if p.is_dir()]  # no version_N
    scalars = read_scalars(tmp_path / "logs/tiny")  # asserts exactly one events file (rank 0 only)
    assert [step for step, _ in scalars["val_loss"]] == [7]

    last = load_ckpt(tmp_path / "checkpoints/tiny/last.ckpt")
    assert last["global_step"] == 8
    assert last["ShakespeareDataModule"] == {"train_batches_done": 8}


def test_random_windows_differ_between_ranks():
    from tinyllm.training.data import RandomWindows

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


def test_corrupt_checkpoint_for_validate_is_one_line(tmp_path: Path):
    (tmp_path / "broken.ckpt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    proc = run_main("validate", "--config", TINY, "--ckpt_path", "broken.ckpt", cwd=tmp_path)
    assert_one_line_error(proc, "broken.ckpt", "not a readable checkpoint")


def test_bad_callback_option_in_the_config_is_one_line(tmp_path: Path):
    text = TINY.read_text()
    # The sample prompt holds a character Tiny Shakespeare lacks: refused at start-up, not at the first sample.
    (tmp_path / "prompt.yaml").write_text(text.replace("samples:\n", 'samples:\n  prompt: "ROMEO§"\n'))
    proc = run_main("fit", "--config", "prompt.yaml", cwd=tmp_path)
    assert_one_line_error(proc, "§", "--samples.prompt", "--samples null")
    assert not list(tmp_path.rglob("*.ckpt"))
    (tmp_path / "every.yaml").write_text(text + "save_every_n_steps: 0\n")
    proc = run_main("fit", "--config", "every.yaml", cwd=tmp_path)
    assert_one_line_error(proc, "save_every_n_steps")
    # Two stateful callbacks of one kind: Lightning's RuntimeError, as one line too.
    proc = run_main("fit", "--config", TINY, "--trainer.callbacks+=tinyllm.training.callbacks.RNGState", cwd=tmp_path)
    assert_one_line_error(proc, "RNGState")


# ----------------------------------------------------------------------------- a run is a name; resume only when asked


def _checksums(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_fit_into_a_used_run_folder_is_refused_and_changes_nothing(fit_copy: Path):
    before = _checksums(fit_copy)
    proc = run_main("fit", "--config", TINY, "--model.lr", "0.01", cwd=fit_copy)
    assert_one_line_error(proc, "checkpoints/tiny", "--ckpt_path last", "--name")
    assert _checksums(fit_copy) == before  # checkpoints and logs byte for byte


def test_logs_whose_checkpoints_were_moved_away_are_not_taken_over(fit_copy: Path):
    shutil.rmtree(fit_copy / "checkpoints")
    before = _checksums(fit_copy)
    proc = run_main("fit", "--config", TINY, cwd=fit_copy)
    assert_one_line_error(proc, "logs/tiny", "no checkpoint to resume", "--name")
    assert _checksums(fit_copy) == before


@pytest.mark.slow
def test_the_run_name_decides_both_folders(tmp_path: Path):
    proc = run_cli("fit", "--config", TINY, "--name", "other", "--trainer.max_steps", "2", "--samples", "null",
                   "--trainer.precision", "bf16-mixed", cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    # bf16-mixed keeps float32 weights: the summary's size is right, and its warning that it may not be is not shown.
    assert "Total params" in proc.stdout and "not supported by the model summary" not in proc.stderr
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["other"]
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["other"]
    assert (tmp_path / "checkpoints/other/last.ckpt").is_file()
    assert "--- sample at step" not in proc.stdout  # `samples: null` switched the optional callback off


@pytest.mark.parametrize("change,mention", [
    (["--model.arch.n_layer", "3"], "arch.n_layer: checkpoint 2, config 3"),
    (["--model.lr", "0.01"], "lr: checkpoint 0.002, config 0.01"),
    (["--data.tokenizer", "gpt2"], "gpt2"),
])  # fmt: skip
def test_resuming_into_another_configuration_is_refused_and_changes_nothing(fit_copy: Path, change, mention):
    before = _checksums(fit_copy)
    proc = run_main("fit", "--config", TINY, "--ckpt_path", "last", "--trainer.max_steps", "30", *change, cwd=fit_copy)
    assert_one_line_error(proc, "last.ckpt", mention)
    assert _checksums(fit_copy) == before


@pytest.mark.slow
@pytest.mark.parametrize("which", ["best", "last"])
def test_validate_evaluates_the_checkpoints_own_architecture_and_says_so(fit_copy: Path, fit_run: FitRun, which: str):
    # No config: the defaults describe a 6-layer model, the checkpoint a 2-layer one.
    proc = run_cli("validate", "--name", "tiny", "--ckpt_path", which, "--trainer.limit_val_batches", "4",
                   "--data.batch_size", "8", cwd=fit_copy, timeout=120)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert f"validating {which}.ckpt with its own architecture (arch.block_size: checkpoint 32, config 256" in proc.stderr
    assert "callbacks used to create the checkpoint" not in proc.stderr  # their state does not matter to an evaluation
    if which == "best":
        best = best_model_score(load_ckpt(fit_copy / "checkpoints/tiny/best.ckpt"))
        assert reported_val_loss(proc.stdout) == pytest.approx(best, rel=1e-5)


def test_best_without_a_best_checkpoint_is_one_line(tmp_path: Path):
    proc = run_main("validate", "--config", TINY, "--ckpt_path", "best", cwd=tmp_path)
    assert_one_line_error(proc, "checkpoints/tiny/best.ckpt")


@pytest.mark.slow
def test_print_config_shows_the_wired_in_defaults(tmp_path: Path):
    proc = run_cli("fit", "--config", TINY, "--print_config", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, describe(proc)
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["name"] == "tiny" and cfg["save_every_n_steps"] == 8
    assert cfg["early_stopping"]["init_args"]["patience"] == 3 and cfg["early_stopping"]["init_args"]["monitor"] == "val_loss"
    assert cfg["samples"]["init_args"]["max_new_tokens"] == 20 and cfg["samples"]["init_args"]["prompt"] == "ROMEO:"
    assert cfg["trainer"]["max_epochs"] == -1 and cfg["trainer"]["check_val_every_n_epoch"] is None


@pytest.mark.slow
def test_a_bpe_learned_by_fit_resumes_and_validates_with_the_checkpoints_tokenizer(tmp_path: Path):
    fit = ["fit", "--config", TINY, "--data.tokenizer", "bpe:300", "--samples", "null"]
    proc = run_cli(*fit, "--trainer.max_steps", "8", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, describe(proc)
    last = tmp_path / "checkpoints/tiny/last.ckpt"
    stored = load_ckpt(last)["hyper_parameters"]["tokenizer"]
    assert stored["kind"] == "bpe" and '"<|endoftext|>"' in stored["tokenizer_json"]

    refused = run_main(*fit, "--data.tokenizer", "bpe:400", "--ckpt_path", "last", "--trainer.max_steps", "16",
                       cwd=tmp_path)  # fmt: skip
    assert_one_line_error(refused, "last.ckpt", "bpe:300", "bpe:400")
    proc = run_cli(*fit, "--ckpt_path", "last", "--trainer.max_steps", "16", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, describe(proc)
    assert load_ckpt(last)["global_step"] == 16

    final = read_all_scalars(tmp_path / "logs/tiny")[VAL_LOSS][-1][1]  # the evaluation at step 16, same weights
    proc = run_cli("validate", "--config", TINY, "--data.tokenizer", "bpe:300", "--ckpt_path", "last", cwd=tmp_path,
                   timeout=120)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert reported_val_loss(proc.stdout) == pytest.approx(final, rel=1e-5)


@pytest.mark.slow
def test_a_run_stopped_early_says_so(tmp_path: Path):
    proc = run_cli("fit", "--config", TINY, "--trainer.max_steps", "40", "--early_stopping.patience", "1",
                   "--early_stopping.min_delta", "100", cwd=tmp_path)  # no evaluation can improve by 100 nats
    assert proc.returncode == 0, describe(proc)
    assert "tinyllm: stopped early at step 16: Monitored metric val_loss did not improve" in proc.stderr, describe(proc)
    assert "--early_stopping null trains to the end" in proc.stderr
