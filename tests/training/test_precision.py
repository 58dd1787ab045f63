"""tinyllm.training.precision.choose_precision's decision table, and that --trainer.precision overrides it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import tinyllm.training.precision as precision
from tests.helpers.cli import TINY, run_cli
from tinyllm.training.precision import choose_precision, detect_device


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Pretend to be a machine with the given devices: machine(cuda=..., bf16=..., mps=..., cpu_bf16=...)."""

    def pretend(cuda: bool = False, bf16: bool = False, mps: bool = False, cpu_bf16: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: cpu_bf16)

    return pretend


@pytest.mark.parametrize(
    ("devices", "accelerator", "expected", "device"),
    [
        pytest.param(dict(cuda=True, bf16=True), "auto", "bf16-mixed", "cuda", id="cuda-bf16"),
        pytest.param(dict(cuda=True, bf16=False), "auto", "16-mixed", "cuda", id="cuda-no-bf16-T4"),
        pytest.param(dict(cuda=True, bf16=True), "gpu", "bf16-mixed", "cuda", id="gpu-means-cuda"),
        pytest.param(dict(cuda=True, bf16=False), "cuda", "16-mixed", "cuda", id="explicit-cuda"),
        pytest.param(dict(mps=True), "auto", "32-true", "mps", id="mps"),
        pytest.param(dict(mps=True, cpu_bf16=True), "auto", "32-true", "mps", id="mps-on-bf16-cpu"),
        pytest.param(dict(mps=True), "gpu", "32-true", "mps", id="gpu-means-mps-without-cuda"),
        pytest.param(dict(cpu_bf16=True), "auto", "bf16-mixed", "cpu", id="cpu-native-bf16"),
        pytest.param(dict(), "auto", "32-true", "cpu", id="cpu-without-bf16"),
        # An explicit CPU accelerator ignores the GPU: the CPU rule applies.
        pytest.param(dict(cuda=True, bf16=True), "cpu", "32-true", "cpu", id="cpu-on-cuda-machine"),
        pytest.param(dict(cuda=True, bf16=False, cpu_bf16=True), "cpu", "bf16-mixed", "cpu",
                     id="cpu-on-cuda-machine-native-bf16"),
        pytest.param(dict(cuda=True, bf16=True, mps=True), "cpu", "32-true", "cpu", id="cpu-beats-everything"),
    ],
)  # fmt: skip
def test_decision_table(machine, devices: dict, accelerator: str, expected: str, device: str):
    machine(**devices)
    assert detect_device(accelerator) == device
    chosen, why = choose_precision(accelerator)
    assert chosen == expected
    assert isinstance(why, str) and why.strip(), "the reason is printed to the user: it must say something"


def test_cuda_wins_over_mps_and_cpu_bf16(machine):
    machine(cuda=True, bf16=False, mps=True, cpu_bf16=True)
    assert choose_precision()[0] == "16-mixed"


def test_cpu_reason_mentions_emulation(machine):
    machine()
    assert "emulated" in choose_precision("cpu")[1]


def test_cpu_has_native_bf16_reads_cpuinfo_flags(monkeypatch: pytest.MonkeyPatch):
    for flags, expected in [("fpu sse avx2", False), ("fpu avx512f avx512_bf16", True), ("amx_bf16 amx_tile", True)]:
        monkeypatch.setattr(precision.Path, "read_text", lambda self, _f=flags: f"flags\t: {_f}\n")
        assert precision.cpu_has_native_bf16() is expected

    def unreadable(self):
        raise OSError("no /proc here")

    monkeypatch.setattr(precision.Path, "read_text", unreadable)
    assert precision.cpu_has_native_bf16() is False


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_explicit_precision_wins_over_auto(tmp_path: Path):
    # 32-true is what auto picks on a CPU without native bf16, so bf16-mixed shows the override
    # (Lightning runs it, emulated, on any CPU).
    proc = run_cli(
        "fit", "--config", TINY, "--trainer.precision", "bf16-mixed",
        "--trainer.max_steps", "2", "--trainer.limit_val_batches", "2", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    assert "precision auto" not in proc.stderr
    assert "bfloat16" in proc.stderr  # Lightning: "Using bfloat16 Automatic Mixed Precision (AMP)"
    saved = yaml.safe_load((tmp_path / "logs/tiny/config.yaml").read_text())
    assert saved["trainer"]["precision"] == "bf16-mixed"


@pytest.mark.slow
def test_explicit_precision_is_in_the_printed_config(tmp_path: Path):
    proc = run_cli("fit", "--config", TINY, "--trainer.precision", "bf16-mixed", "--print_config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert yaml.safe_load(proc.stdout)["trainer"]["precision"] == "bf16-mixed"


# ----------------------------------------------------------------------------- measured, on a bf16-capable CPU


def test_a_bf16_cpu_keeps_the_faster_precision_and_remembers_it(machine, monkeypatch, tmp_path: Path):
    machine(cpu_bf16=True)
    monkeypatch.setenv("TINYLLM_CACHE_DIR", str(tmp_path))
    calls = []

    def probe(p: str) -> float:
        calls.append(p)
        return {"32-true": 0.20, "bf16-mixed": 0.25}[p]

    chosen, why = choose_precision("auto", probe, "machine A | model")
    assert chosen == "32-true" and "32-true 0.200 s/step" in why and "bf16-mixed 0.250 s/step" in why
    assert sorted(calls) == ["32-true", "bf16-mixed"]
    # The second start reads the answer back: no probe.
    assert choose_precision("auto", lambda p: pytest.fail("probed again"), "machine A | model")[0] == "32-true"
    assert "cached" in choose_precision("auto", probe, "machine A | model")[1]
    # Another model or batch is another key: measured again, and here bf16 wins.
    assert choose_precision("auto", lambda p: {"32-true": 3.0, "bf16-mixed": 2.0}[p], "machine A | big")[0] == "bf16-mixed"


def test_a_cpu_without_bf16_and_gpus_are_never_probed(machine):
    never = lambda p: pytest.fail("probed")  # noqa: E731
    machine()
    assert choose_precision("auto", never, "k")[0] == "32-true"
    machine(cuda=True, bf16=False, cpu_bf16=True)
    assert choose_precision("auto", never, "k")[0] == "16-mixed"


def test_the_probe_times_the_modules_own_training_step_on_a_copy(monkeypatch: pytest.MonkeyPatch):
    from tinyllm.core.config import GPTConfig
    from tinyllm.training.module import GPTLitModule
    from tinyllm.training.precision import PROBE_VERSION, probe_key, training_step_probe

    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11)
    lit = GPTLitModule(cfg, optimizer="adamw")
    before = {k: v.clone() for k, v in lit.state_dict().items()}
    calls = []
    real_loss = GPTLitModule.loss
    monkeypatch.setattr(GPTLitModule, "loss", lambda self, batch: calls.append(batch[0].shape) or real_loss(self, batch))
    seconds = training_step_probe(lit, batch_size=2, steps=2, warmup=1)("32-true")
    assert calls == [(2, 8)] * 3  # warm-up + timed steps, each the module's own loss at the run's batch and context
    assert seconds > 0
    assert all(torch.equal(before[k], v) for k, v in lit.state_dict().items())  # the run's weights are untouched
    assert probe_key(cfg, 2) != probe_key(cfg, 4) and "1x2x16" in probe_key(cfg, 2)
    assert probe_key(cfg, 2) != probe_key(GPTConfig(**{**cfg.to_dict(), "dropout": 0.1}), 2)  # dropout costs time
    assert probe_key(cfg, 2).endswith(f"probe {PROBE_VERSION}")  # a new version measures again


def test_the_probe_leaves_the_global_rng_untouched():
    # A run seeds itself before the probe: probing must not change the weights it then initialises.
    from tinyllm.core.config import GPTConfig
    from tinyllm.training.module import GPTLitModule
    from tinyllm.training.precision import training_step_probe

    lit = GPTLitModule(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11))
    torch.manual_seed(1337)
    before = torch.get_rng_state()
    training_step_probe(lit, batch_size=2, steps=1, warmup=0)("32-true")
    assert torch.equal(torch.get_rng_state(), before)
