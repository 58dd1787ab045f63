"""notebooks/tour.ipynb under a real Jupyter kernel: it trains its own model, and every stop draws its picture."""

from __future__ import annotations

import pytest

from pathlib import Path

import nbformat

from tests.helpers.cli import REPO, env_for_cli
from tests.helpers.notebooks import execute, text_of

NOTEBOOK = REPO / "notebooks" / "tour.ipynb"
# A few steps of a 1 x 32 model: the pictures are the same kind, in seconds.
TRAIN_ARGS = ("--trainer.max_time null --trainer.max_steps 20 --trainer.val_check_interval 10 "
              "--trainer.limit_val_batches 2 --model.arch.n_layer 2 --model.arch.n_embd 32 --model.arch.n_head 2 "
              "--data.batch_size 4")  # fmt: skip
STOPS = ["Norms", "RoPE", "Attention", "The KV cache", "SwiGLU", "The logit lens"]


def test_tour_walks_the_model_file_in_order():
    headings = [c.source.splitlines()[0] for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "markdown"]
    found = [next(i for i, h in enumerate(headings) if stop in h) for stop in STOPS]
    assert found == sorted(found), headings


@pytest.mark.slow
def test_tour_runs_under_jupyter_and_draws_every_picture(tmp_path: Path):
    nb = execute(NOTEBOOK, tmp_path, env_for_cli(), REPO_DIR=str(REPO), TRAIN_ARGS=TRAIN_ARGS)
    assert (tmp_path / "tour-run/checkpoints/tour/last.ckpt").is_file()
    code = [c for c in nb.cells if c.cell_type == "code"]
    pictures = [c for c in code if any("image/png" in out.get("data", {}) for out in c.outputs)]
    assert len(pictures) == len(STOPS)  # one picture per stop
    printed = "\n".join(text_of(c) for c in code)
    for claim in ("every row sums to 1: True", "same tokens with and without the cache: True",
                  "last layer equals the model's own prediction: True"):  # fmt: skip
        assert claim in printed, printed[-3000:]
