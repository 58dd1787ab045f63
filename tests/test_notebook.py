"""notebooks/colab.ipynb, run by Jupyter itself: nbclient drives a real IPython kernel, magics and ``!`` lines included.

Only what needs Colab and the network is switched off, through the notebook's own ``parameters`` cell:
``INSTALL`` (clone + pip) and ``USE_DRIVE``. ``EXTRA_ARGS`` shrinks the run to a few steps of a tiny model.
"""

from __future__ import annotations

import pytest

import re
import tomllib
from pathlib import Path

import nbformat
import torch

from tests.helpers.cli import REPO, env_for_cli, faults_env
from tests.helpers.notebooks import execute, parameters_index, stop_tensorboards, text_of

NOTEBOOK = REPO / "notebooks" / "colab.ipynb"
REPOSITORY = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]["Repository"]

# A few steps of a 1 x 32 model with short validations: seconds instead of minutes.
TINY_ARGS = (
    "--trainer.val_check_interval 3 --trainer.limit_val_batches 4 --save_every_n_steps 4 "
    "--model.arch.n_layer 1 --model.arch.n_embd 32 --model.arch.n_head 2 --model.arch.block_size 32 "
    "--data.batch_size 4 --trainer.max_steps 12"
)


def cell_running(nb: nbformat.NotebookNode, text: str) -> nbformat.NotebookNode:
    [cell] = [c for c in nb.cells if c.cell_type == "code" and text in c.source]
    return cell


def test_notebook_is_valid_nbformat4_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.language == "python"
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    kinds = [c.cell_type for c in nb.cells]  # markdown between the steps: no two code cells in a row
    assert all(not (a == b == "code") for a, b in zip(kinds, kinds[1:])), kinds


def test_repository_url_and_open_in_colab_links_agree():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert f'REPO_URL = "{REPOSITORY}"' in nb.cells[parameters_index(nb)].source
    colab = REPOSITORY.replace("https://github.com/", "https://colab.research.google.com/github/")
    link = f"{colab}/blob/main/notebooks/colab.ipynb"
    assert link in nb.cells[0].source
    assert link in (REPO / "README.md").read_text()


def test_tensorboard_starts_before_training():
    sources = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells]
    board = next(i for i, s in enumerate(sources) if "%tensorboard" in s)
    fit = next(i for i, s in enumerate(sources) if "tinyllm fit" in s)
    assert board < fit


@pytest.mark.slow
def test_notebook_runs_under_jupyter_and_resumes_after_a_disconnect(tmp_path: Path):
    params = {"REPO_DIR": str(REPO), "INSTALL": False, "USE_DRIVE": False}
    run_dir = tmp_path / "tinyllm-run"
    last = run_dir / "checkpoints/quick/last.ckpt"
    try:
        # The machine goes away at step 6 (a SIGKILL, as Colab's disconnect), and no later cell runs: the checkpoint
        # of step 4 is on "Drive".
        first = execute(NOTEBOOK, tmp_path, faults_env(6), until="tinyllm fit", **params,
                        EXTRA_ARGS=f"{TINY_ARGS} --trainer.callbacks+=faults.KillAt")  # fmt: skip
        board = cell_running(first, "%tensorboard")
        assert any("text/html" in out.get("data", {}) for out in board.outputs), text_of(board)
        assert "run folder: " + str(run_dir) in text_of(cell_running(first, "RUN_DIR ="))
        assert "Restoring states" not in text_of(cell_running(first, "tinyllm fit"))
        assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4

        # Reconnected: every cell again, in a new kernel; training resumes from the checkpoint and finishes.
        second = execute(NOTEBOOK, tmp_path, env_for_cli(), **params, EXTRA_ARGS=TINY_ARGS)
    finally:
        stop_tensorboards(tmp_path)
    fit = text_of(cell_running(second, "tinyllm fit"))
    assert "Restoring states from the checkpoint" in fit, fit[-3000:]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 12
    assert [p.name for p in (run_dir / "logs").iterdir()] == ["quick"]
    assert not [p for p in (run_dir / "logs/quick").iterdir() if p.is_dir()], "a version_N folder appeared"

    validate = text_of(cell_running(second, "tinyllm validate"))
    assert re.search(r"^\W*val_loss\W+[0-9.]+", validate, flags=re.MULTILINE), validate[-3000:]
    generate = text_of(cell_running(second, "tinyllm generate"))
    assert generate.startswith("ROMEO:") and len(generate) >= len("ROMEO:") + 300, generate[-3000:]
