"""``python -m tinyllm export`` end to end: the folder then feeds generate and validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import TINY, assert_one_line_error, describe, reported_val_loss, run_cli
from tinyllm.formats.load import load_model


@pytest.mark.slow
def test_export_command_then_generate_and_validate_on_the_folder(runs, tmp_path: Path):
    run_dir = runs["char"].parents[2]
    out = tmp_path / "shared-char"
    proc = run_cli("export", "--ckpt_path", runs["char"], "--out_dir", out, "--verify", "false",
                   "--val_fraction", "0.2", cwd=run_dir)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert "the last 20% of Tiny Shakespeare" in (out / "README.md").read_text(encoding="utf-8")  # measured there
    assert "LlamaForCausalLM" in proc.stdout and "35,008 parameters" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md"]
    )
    # generate: the folder gives the same greedy text as the checkpoint.
    texts = {}
    for source in (runs["char"], out):
        gen = run_cli("generate", "--ckpt_path", source, "--max_new_tokens", "20", "--temperature", "0", cwd=run_dir)
        assert gen.returncode == 0, describe(gen)
        texts[source] = gen.stdout
    assert texts[out] == texts[runs["char"]] and texts[out].startswith("ROMEO:")
    # validate: Lightning's val loss of the folder equals the one the checkpoint recorded at step 4.
    val = run_cli("validate", "--config", TINY, "--ckpt_path", out, cwd=run_dir)
    assert val.returncode == 0, describe(val)
    value = reported_val_loss(val.stdout)
    assert value == pytest.approx(load_model(runs["char"]).metrics["best_val_loss"], rel=1e-5)
    # fit: an exported folder holds no optimizer or loop state, so it cannot be resumed; it is said so.
    resume = run_cli("fit", "--config", TINY, "--name", "again", "--ckpt_path", out, cwd=run_dir)
    assert_one_line_error(resume, "is an exported model", "fit resumes from its run's checkpoints/NAME/last.ckpt")

