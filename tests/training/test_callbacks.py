"""Optional callbacks: those that look at the model leave training exactly as it was; the progress bar tells the truth."""

from __future__ import annotations

import contextlib
import io
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.cli import TINY, describe, faults_env, load_ckpt, run_cli
from tinyllm.training.callbacks import SameResumeEverywhere, StepProgressBar, TokenThroughput
from tinyllm.training.cli import build_cli

# Dropout on, so any random number drawn by the callback would change the weights.
RUN = ["fit", "--config", TINY, "--model.arch.dropout", "0.1", "--trainer.max_steps", "16", "--samples", "null"]


@pytest.mark.slow
def test_attention_images_go_to_tensorboard_and_change_no_weight(tmp_path: Path):
    plain, watched = tmp_path / "plain", tmp_path / "watched"
    plain.mkdir()
    watched.mkdir()
    assert (p := run_cli(*RUN, cwd=plain)).returncode == 0, describe(p)
    proc = run_cli(*RUN, "--attention_images", "AttentionImages", cwd=watched)
    assert proc.returncode == 0, describe(proc)

    a, b = (load_ckpt(d / "checkpoints/tiny/last.ckpt") for d in (plain, watched))
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name

    events = EventAccumulator(str(watched / "logs/tiny"), size_guidance={"images": 0})
    events.Reload()
    assert "attention" in events.Tags()["images"]
    images = events.Images("attention")
    assert [i.step for i in images] == [8, 16]  # one grid per evaluation (every 8 batches)
    assert images[0].width > 300 and images[0].encoded_image_string.startswith(b"\x89PNG")
    plain_events = EventAccumulator(str(plain / "logs/tiny"))
    plain_events.Reload()
    assert plain_events.Tags()["images"] == []  # off by default


@pytest.mark.slow
def test_a_resumed_run_shows_its_total_the_steps_done_and_a_rate_of_this_process(tmp_path: Path):
    run = ["fit", "--config", str(TINY), "--samples", "null"]
    killed = run_cli(*run, "--trainer.callbacks+=faults.KillAt", cwd=tmp_path, env=faults_env(12))
    assert killed.returncode == -9, describe(killed)  # last.ckpt holds step 8
    with contextlib.chdir(tmp_path):
        cli = build_cli([*run, "--ckpt_path", "last"])
    bar = next(cb for cb in cli.trainer.callbacks if isinstance(cb, StepProgressBar)).train_progress_bar
    # Lightning calls no on_train_epoch_start when it resumes mid-epoch: the bar is set up on train start too.
    assert bar.desc.startswith("step") and (bar.total, bar.initial, bar.n) == (24, 8, 24)
    assert "24/24" in str(bar)
    # tqdm's rate and time left are (n - initial) / elapsed: the 16 steps of this process, not the 8 before it.
    assert bar.format_dict["initial"] == 8


def test_a_budget_bar_shows_the_time_used_out_of_the_budget():
    timer = Timer(duration=timedelta(minutes=30))
    timer.time_elapsed = lambda stage="train": 610.4  # as restored from a checkpoint, across resumes
    timer.time_remaining = lambda stage="train": 1189.6
    trainer = SimpleNamespace(callbacks=[timer], max_steps=-1, global_step=2419)
    progress = StepProgressBar()
    progress.train_progress_bar = Tqdm(file=io.StringIO(), total=None)
    progress._start(trainer)
    bar = progress.train_progress_bar
    assert bar.desc == "step 2419 · 10:10 / 30:00"
    assert (bar.total, bar.n) == (1800, 610)
    assert str(bar).startswith("step 2419 · 10:10 / 30:00 |") and str(bar).endswith(" 34%")
    # A run with a step limit keeps the step bar, budget or not.
    trainer.max_steps = 5000
    progress.train_progress_bar = bar = Tqdm(file=io.StringIO(), total=None)
    progress._start(trainer)
    assert bar.desc == "step: " and bar.total == 5000 and bar.n == bar.initial == 2419


def test_throughput_reports_a_steady_rate_as_steady(monkeypatch: pytest.MonkeyPatch):
    """Every batch: 0.25 s, 2 windows of 8 tokens, 1e9 FLOPs. The rates must not grow with the batches seen."""
    clock = iter(0.25 * i for i in range(1000))
    monkeypatch.setattr("tinyllm.training.callbacks.time.perf_counter", lambda: next(clock))
    logged: dict[str, float] = {}
    module = SimpleNamespace(flops_per_batch=1e9, log_dict=lambda metrics, **_: logged.update(metrics))
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=1)
    meter = TokenThroughput(peak_flops=1e10, window_size=4)
    meter.setup(trainer, module, "fit")
    batch = (torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 8, dtype=torch.long))
    for seen in range(1, 21):
        meter.on_train_batch_start(trainer, module, batch, seen - 1)
        meter.on_train_batch_end(trainer, module, None, batch, seen - 1)
        if seen >= 4:  # the window is full
            assert logged["train/device/flops_per_sec"] == pytest.approx(4e9), seen
            assert logged["train/device/mfu"] == pytest.approx(0.4), seen
            assert logged["train/device/items_per_sec"] == pytest.approx(64), seen
    assert logged["train/lengths"] == 20 * 16


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16),
                                                  ("32-true", torch.float32)])  # fmt: skip
def test_throughput_asks_for_the_peak_of_the_dtype_the_run_multiplies_in(monkeypatch: pytest.MonkeyPatch,
                                                                         precision: str, dtype: torch.dtype):  # fmt: skip
    asked = []
    monkeypatch.setattr("tinyllm.training.callbacks.get_available_flops", lambda device, d: asked.append(d) or 1e12)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), world_size=1, precision=precision)
    TokenThroughput().setup(trainer, SimpleNamespace(), "fit")
    assert asked == [dtype]  # a bf16 GPU run against the bf16 peak, not the fp32 one


def test_the_checkpoint_reader_names_the_states_the_training_classes_save():
    # core/checkpoint reads these states without importing Lightning's classes: their names must match.
    from tinyllm.core.checkpoint import BUDGET_STATE, DATA_STATE, MODEL_PREFIX
    from tinyllm.training.callbacks import TimeBudget
    from tinyllm.training.data import ShakespeareDataModule
    from tinyllm.training.module import GPTLitModule

    assert (TimeBudget.__name__, ShakespeareDataModule.__name__) == (BUDGET_STATE, DATA_STATE)
    from tinyllm.core.config import GPTConfig

    module = GPTLitModule(arch=GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4, vocab_size=5))
    assert all(key.startswith(MODEL_PREFIX) for key in module.state_dict())


def test_the_resume_check_gathers_on_the_strategys_device_and_refuses_a_difference():
    """NCCL, DDP's backend on GPUs, gathers CUDA tensors only: the step goes on the strategy's device."""
    from types import SimpleNamespace

    from tinyllm.errors import TinyLLMError

    sent = []

    def all_gather(t: torch.Tensor) -> torch.Tensor:
        sent.append(t.device)
        return torch.tensor([[8], [-1]])  # rank 0 resumes at step 8, rank 1 found nothing

    trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(root_device=torch.device("meta"),
                                                                     all_gather=all_gather))  # fmt: skip
    with pytest.raises(TinyLLMError, match=r"\(rank 0 step 8, rank 1 none\)"):
        SameResumeEverywhere(8).setup(trainer, None, "fit")
    assert sent == [torch.device("meta")]
