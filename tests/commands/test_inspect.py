"""``python -m tinyllm inspect``: four pictures for a checkpoint or an exported folder; bad input in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.image import imread

from tests.helpers.cli import assert_one_line_error, describe, run_main

PICTURES = ["attention.png", "kv_cache.png", "logit_lens.png", "rope.png"]


@pytest.mark.parametrize("source", ["checkpoint", "export"])
def test_inspect_writes_the_four_pictures(runs, exports, tmp_path: Path, source: str):
    path = runs["char"] if source == "checkpoint" else exports["char"]
    out = tmp_path / "pictures"
    proc = run_main("inspect", "--ckpt_path", path, "--prompt", "ROMEO:\nBut soft, what light", "--out_dir", out,
                    "--new_tokens", "8", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert sorted(p.name for p in out.iterdir()) == PICTURES
    for name in PICTURES:
        assert str(out / name) in proc.stdout
        height, width, _ = imread(out / name).shape
        assert height > 300 and width > 600, name


def test_inspect_draws_no_rope_picture_for_learned_positions(runs, tmp_path: Path):
    proc = run_main("inspect", "--ckpt_path", runs["vanilla"], "--out_dir", tmp_path / "v", "--new_tokens", "4",
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["attention.png", "kv_cache.png", "logit_lens.png"]


def test_inspect_bad_input_is_one_line(runs, tmp_path: Path):
    ckpt = runs["char"]
    too_long = run_main("inspect", "--ckpt_path", ckpt, "--prompt", "x" * 40, "--out_dir", tmp_path / "a", cwd=tmp_path)
    assert_one_line_error(too_long, "context")
    short = run_main("inspect", "--ckpt_path", ckpt, "--prompt", "R", "--out_dir", tmp_path / "b", cwd=tmp_path)
    assert_one_line_error(short, "2 tokens")
    (tmp_path / "taken").write_text("a file, not a folder")
    blocked = run_main("inspect", "--ckpt_path", ckpt, "--out_dir", tmp_path / "taken", "--prompt", "ROMEO:",
                       cwd=tmp_path)  # fmt: skip
    assert_one_line_error(blocked, "--out_dir")
    missing = run_main("inspect", "--ckpt_path", tmp_path / "nope.ckpt", cwd=tmp_path)
    assert_one_line_error(missing, "nope.ckpt")


def test_inspect_writes_under_home_for_a_tilde(runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from tinyllm.commands.inspect_model import inspect

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    inspect(str(runs["vanilla"]), prompt="ROMEO:", out_dir="~/pics", new_tokens=2)
    assert len(list((tmp_path / "home" / "pics").glob("*.png"))) == 3 and not (tmp_path / "~").exists()
