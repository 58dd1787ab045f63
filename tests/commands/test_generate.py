"""``python -m tinyllm generate`` end to end: the KV cache gives the text recompute gives, int8, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FitRun
from tests.helpers.cli import (
    assert_one_line_error,
    describe,
    run_cli,
    run_main,
)
from tinyllm.commands.generate import generate
from tinyllm.core.generate import pick_device
from tinyllm.errors import TinyLLMError


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


@pytest.mark.slow
def test_generate_int8_prints_text_and_compile_without_cache_is_one_line(fit_run: FitRun):
    ckpt = fit_run.dir / "checkpoints/tiny/last.ckpt"
    proc = run_cli("generate", "--ckpt_path", ckpt, "--max_new_tokens", "40", "--temperature", "0",
                   "--quantize", "int8", cwd=fit_run.dir, timeout=120)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert "quantize=int8" in proc.stderr
    assert proc.stdout.startswith("ROMEO:") and len(proc.stdout) == len("ROMEO:") + 40 + 1
    proc = run_cli("generate", "--ckpt_path", ckpt, "--compile", "true", "--kv_cache", "false", cwd=fit_run.dir)
    assert_one_line_error(proc, "--compile", "--kv_cache true")


def test_unknown_device_for_generate_is_one_line(fit_run: FitRun, tmp_path: Path):
    proc = run_cli("generate", "--ckpt_path", fit_run.dir / "checkpoints/tiny/last.ckpt", "--device", "gpu",
                   "--max_new_tokens", "2", cwd=tmp_path)  # fmt: skip
    assert_one_line_error(proc, "--device")
    with pytest.raises(TinyLLMError, match="--device 'meta' cannot run a model"):  # a torch device, not for models
        pick_device("meta")
    with pytest.raises(TinyLLMError, match="--seed must be a seed from 0"):  # before the model is even read
        generate(ckpt_path="nowhere", seed=2**64)


@pytest.mark.parametrize(("option", "value"), [("--max_new_tokens", "0"), ("--temperature", "-1"), ("--top_k", "0"),
                                               ("--top_p", "1.5")])  # fmt: skip
def test_a_bad_sampling_option_is_refused_before_any_text(fit_run: FitRun, tmp_path: Path, option: str, value: str):
    proc = run_main("generate", "--ckpt_path", fit_run.dir / "checkpoints/tiny/last.ckpt", option, value, cwd=tmp_path)
    assert_one_line_error(proc, option.removeprefix("--"))
    assert proc.stdout == ""  # the prompt is not printed first: the error has its line to itself
