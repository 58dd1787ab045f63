"""notebooks/colab.ipynb, executed without Jupyter, so its commands cannot rot.

The notebook's code cells are run in order the way IPython would run them: Python lines are exec'd
in one shared namespace, ``!`` lines have their ``{NAME}`` fields filled from that namespace and go
to bash, ``%`` lines (TensorBoard) are skipped. The install cell (clone + pip) needs the network and
is skipped; without google.colab the Drive cell falls back to a local run folder, here in tmp_path.
``REPO_DIR`` is this checkout and ``EXTRA_ARGS`` shrinks the run to a few steps of a tiny model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import describe

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "colab.ipynb"

# A few steps of a 1 x 32 model with short validations: seconds instead of minutes.
TINY_ARGS = (
    "--trainer.val_check_interval 3 --trainer.limit_val_batches 4 "
    "--model.arch.n_layer 1 --model.arch.n_embd 32 --model.arch.n_head 2 --model.arch.block_size 32 "
    "--data.batch_size 4"
)


def code_cells(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def run_cell(source: str, ns: dict, cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run one code cell: Python chunks exec'd in ``ns``, ``!`` lines through bash. Returns the shell runs."""
    procs: list[subprocess.CompletedProcess[str]] = []
    python: list[str] = []

    def flush() -> None:
        if python:
            exec(compile("\n".join(python), str(NOTEBOOK), "exec"), ns)
            python.clear()

    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("!"):
            assert line == stripped, f"indented shell line (only the skipped install cell may have one): {line!r}"
            flush()
            command = stripped[1:].format_map(ns)  # what IPython does with {NAME} in a ! line
            env = os.environ.copy()  # TINYLLM_DATA_DIR / TINYLLM_CACHE_DIR from the conftest
            env["OMP_NUM_THREADS"] = "1"  # tiny models: one thread is as fast, and no OpenMP stalls
            procs.append(
                subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
            )
        elif stripped.startswith("%"):
            assert "tensorboard" in stripped, f"unexpected magic in the notebook: {line!r}"
        else:
            python.append(line)
    flush()
    return procs


def test_notebook_is_valid_nbformat4_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    # Markdown between the steps: no two code cells in a row.
    kinds = [c["cell_type"] for c in nb["cells"]]
    assert all(not (a == b == "code") for a, b in zip(kinds, kinds[1:])), kinds


def test_notebook_trains_resumes_validates_and_generates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    nb = json.loads(NOTEBOOK.read_text())
    install, *cells = code_cells(nb)
    assert "pip install" in install and 'REPO_URL = "https://github.com/YOUR_NAME/tinyllm"' in install
    assert any("drive.mount" in c for c in cells), "no Google Drive cell"
    [train_index] = [i for i, c in enumerate(cells) if "tinyllm fit" in c]
    train = cells[train_index]
    assert "--ckpt_path last" in train and "{EXTRA_ARGS}" in train
    assert [c for c in cells if c.lstrip().startswith("%")], "no TensorBoard cell"
    assert "%tensorboard" in "".join(cells)

    # The Drive cell sets os.environ["TINYLLM_DATA_DIR"] only when unset: keep the conftest's value,
    # and undo anything the cells change in this process's environment.
    monkeypatch.setenv("TINYLLM_DATA_DIR", os.environ["TINYLLM_DATA_DIR"])
    monkeypatch.chdir(tmp_path)  # the local fallback RUN_DIR is relative to the working directory
    overrides = {"REPO_DIR": str(REPO), "EXTRA_ARGS": f"--trainer.max_steps 6 {TINY_ARGS}"}
    ns: dict = {"__name__": "__notebook__"}
    outputs: dict[str, list[subprocess.CompletedProcess[str]]] = {}

    for index, source in enumerate(cells):
        procs = run_cell(source, ns, cwd=tmp_path)
        ns.update(overrides)  # after the setup cells have set their defaults
        if index != train_index:
            for kind in ("validate", "generate"):
                if f"tinyllm {kind}" in source:
                    outputs[kind] = procs
            continue

        # ---- the train cell: a fresh start ...
        run_dir = Path(ns["RUN_DIR"])
        assert run_dir == tmp_path / "tinyllm-run", run_dir
        assert os.environ["TINYLLM_DATA_DIR"] != str(run_dir / "data")  # the conftest's data folder was kept
        [fit] = procs
        assert fit.returncode == 0, describe(fit)
        last = run_dir / "checkpoints/quick/last.ckpt"
        assert last.is_file(), sorted(map(str, run_dir.rglob("*")))
        assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 6
        assert (run_dir / "logs/quick").is_dir()
        assert "Restoring states from the checkpoint" not in fit.stdout + fit.stderr

        # ... and the same cell run again, as after a disconnect, with a longer run: it resumes.
        ns["EXTRA_ARGS"] = overrides["EXTRA_ARGS"] = f"--trainer.max_steps 12 {TINY_ARGS}"
        [fit] = run_cell(source, ns, cwd=tmp_path)
        assert fit.returncode == 0, describe(fit)
        assert "Restoring states from the checkpoint" in fit.stdout + fit.stderr, describe(fit)
        assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 12
        assert [p.name for p in (run_dir / "logs").iterdir()] == ["quick"]
        assert not [p for p in (run_dir / "logs/quick").iterdir() if p.is_dir()], "a version_N folder appeared"

    [validate] = outputs["validate"]
    assert validate.returncode == 0, describe(validate)
    assert re.search(r"^\W*val_loss\W+[0-9.]+", validate.stdout, flags=re.MULTILINE), describe(validate)

    [generate] = outputs["generate"]
    assert generate.returncode == 0, describe(generate)
    assert generate.stdout.startswith("ROMEO:"), describe(generate)
    assert len(generate.stdout) >= len("ROMEO:") + 300
