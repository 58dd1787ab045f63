"""Shared test helpers: running ``python -m tinyllm`` as a user would, and reading what it wrote."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
PLAIN_TYPES = (dict, list, tuple, str, int, float, bool, type(None))


def env_for_cli(**extra: str) -> dict[str, str]:
    """The test session's environment (the conftest put TINYLLM_DATA_DIR and TINYLLM_CACHE_DIR there)."""
    env = os.environ.copy()
    # These models are tiny: one BLAS/OpenMP thread per process is as fast, and it keeps a busy
    # 2-core machine from stalling in OpenMP barriers (a 2-thread matmul there can take 100x longer).
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def faults_env(step: int) -> dict[str, str]:
    """The environment for a run with a fault from tests/helpers/faults.py (``--trainer.callbacks+=faults.KillAt``) at ``step``."""
    return env_for_cli(TINYLLM_TEST_KILL_AT_STEP=str(step),
                       PYTHONPATH=str(REPO / "tests" / "helpers") + os.pathsep + os.environ.get("PYTHONPATH", ""))  # fmt: skip


def run_cli(*args: object, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m tinyllm ARGS`` in ``cwd``, as a user would type it."""
    return subprocess.run([sys.executable, "-m", "tinyllm", *map(str, args)], cwd=cwd, env=env or env_for_cli(),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def run_main(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m tinyllm ARGS`` inside this process, for error paths: no interpreter start-up (4 s each here).

    The result looks like ``run_cli``'s, so the same assertions apply; an exception that escapes
    ``main`` (a traceback in a real run) propagates and fails the test.
    """
    from tinyllm.__main__ import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-2000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *mentions: str) -> str:
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tinyllm: error:")]
    assert len(errors) == 1 and proc.stderr.rstrip().splitlines()[-1] == errors[0], describe(proc)
    for word in mentions:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    return errors[0]


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert msg, "error message is empty"
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The run's scalars through tinyllm's own reader, after checking one process wrote one events file."""
    from tinyllm.commands.plot import read_scalars as read

    events = sorted(run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1, f"expected one TensorBoard events file in {run_dir}, found {events}"
    return read(run_dir)


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
