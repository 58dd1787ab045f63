"""Optional callbacks that look at the model must leave training exactly as it was."""

from __future__ import annotations

import pytest

from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.cli import TINY, describe, load_ckpt, run_cli

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
