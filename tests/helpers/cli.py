"""Shared test helpers: running ``python -m tinyllm`` as a user would, and reading what it wrote."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
PLAIN_TYPES = (dict, list, tuple, str, int, float, bool, type(None))
# Lightning and torch.compile set these in the test process when a test trains or compiles in it; a user's
# shell has none of them (a leaked PL_GLOBAL_SEED would even seed a run that sets no seed).
SET_IN_THE_TEST_PROCESS = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "PYTORCH_NVML_BASED_CUDA_CHECK", "TORCHINDUCTOR_CACHE_DIR",
                           "_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR")


def env_for_cli(**extra: str) -> dict[str, str]:
    """The test session's environment (the conftest put TINYLLM_DATA_DIR and TINYLLM_CACHE_DIR there)."""
    env = {k: v for k, v in os.environ.items() if k not in SET_IN_THE_TEST_PROCESS}
    # These models are tiny: one BLAS/OpenMP thread per process is as fast, and it keeps a busy
    # 2-core machine from stalling in OpenMP barriers (a 2-thread matmul there can take 100x longer).
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def faults_env(step: int) -> dict[str, str]:
    """The environment for a run with a fault from tests/helpers/faults.py (``--trainer.callbacks+=faults.KillAt``) at ``step``."""
    return env_for_cli(TINYLLM_TEST_KILL_AT_STEP=str(step),
                       PYTHONPATH=str(REPO / "tests" / "helpers") + os.pathsep + os.environ.get("PYTHONPATH", ""))  # fmt: skip


def run_cli(*args: object, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300, fresh: bool = False
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``python -m tinyllm ARGS`` in ``cwd``, as a user would type it.

    The process is forked from a server that has already imported tinyllm (``zygote.py``) when
    ``env`` differs from the tests' own only where tinyllm reads it at run time; otherwise, or
    with ``fresh``, it is a new interpreter (OpenMP and Hugging Face settings are read at import).
    """
    env = env or env_for_cli()
    command = [sys.executable, "-m", "tinyllm", *map(str, args)]
    if not fresh and forkable(env):
        return _zygote().run(command, cwd, env, timeout)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# Environment variables that tinyllm, tiktoken, urllib and the test helpers read when they run, not on import
# (pytest sets PYTEST_CURRENT_TEST for every test; conftest sets the proxy variables).
READ_AT_RUN_TIME = ("TINYLLM_", "PYTEST_", "PYTHONPATH", "TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")


# The fork server's environment: the session's as it began, not that of whichever test happens to start the
# server (it may have patched some variables).
SESSION_ENV = env_for_cli()


def forkable(env: dict[str, str]) -> bool:
    """True when ``env`` differs from the fork server's only in variables read after start-up."""
    changed = {k for k in SESSION_ENV.keys() | env.keys() if SESSION_ENV.get(k) != env.get(k)}
    return all(k.startswith(READ_AT_RUN_TIME) or k.lower().endswith("_proxy") for k in changed)


class Zygote:
    """The client of ``tests/helpers/zygote.py``: one server per test process, started on first use."""

    def __init__(self) -> None:
        self.server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("zygote.py"))], env=SESSION_ENV,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)  # fmt: skip
        self.pending = b""

    def _reply(self, timeout: float | None) -> dict:
        """The server's next line; TimeoutError when none comes within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.server.stdout], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self.server.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the tinyllm fork server ended with status {self.server.wait()}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return json.loads(line)

    def run(self, command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        """``command`` (``python -m tinyllm ARGS``) forked from the server; what ``subprocess.run`` would return."""
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            out.touch(), err.touch()
            request = {"args": command[3:], "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            self.server.stdin.write(json.dumps(request).encode() + b"\n")
            pid = self._reply(None)["pid"]
            try:
                code = self._reply(timeout)["returncode"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._reply(None)
                raise subprocess.TimeoutExpired(command, timeout, out.read_text(), err.read_text()) from None
            return subprocess.CompletedProcess(command, code, out.read_text(), err.read_text())


@functools.cache
def _zygote() -> Zygote:
    return Zygote()


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
