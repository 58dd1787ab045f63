"""``python -m tinyllm bench``: the benchmarks print and write their figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import FitRun
from tinyllm.core.model import GPT, GPTConfig
from tinyllm.errors import TinyLLMError
from tinyllm.formats.load import load_model
from tests.helpers.cli import (
    TINY,
    run_cli,
)


@pytest.mark.slow
def test_bench_commands_print_and_write_their_figures(fit_run: FitRun, tmp_path: Path):
    proc = run_cli("bench", "generate", "--ckpt_path", fit_run.dir / "checkpoints/tiny/last.ckpt",
                   "--lengths", "[5, 40]", "--setups", "[fp32, int8]", "--json", tmp_path / "gen.json",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "gen.json").read_text())["results"]
    # 40 > block_size 32: the window moves
    assert [(r["setup"], r["new_tokens"]) for r in rows] == [("fp32", 5), ("fp32", 40), ("int8", 5), ("int8", 40)]
    for r in rows:  # the figures are consistent with each other, not just positive
        assert r["speedup"] == pytest.approx(r["cached_tokens_per_s"] / r["recompute_tokens_per_s"], abs=0.01)
        assert r["cached_first_token_ms"] * r["cached_tokens_per_s"] <= 1000 * r["new_tokens"]  # TTFT within the run
    proc = run_cli("bench", "train", "--config", TINY, "--steps", "2", "--warmup", "0", "--rounds", "1",
                   "--json", tmp_path / "train.json", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads((tmp_path / "train.json").read_text())["results"]
    assert row["tokens_per_step"] == 8 * 32 and row["parameters"] == load_model(fit_run.dir / "checkpoints/tiny/last.ckpt").model.num_parameters()
    for loop in ("plain", "lightning"):  # tokens/s and MFU follow from the step time, the model's FLOPs and the peak
        step_s = row[f"{loop}_step_s"]
        assert row[f"{loop}_tokens_per_s"] == pytest.approx(row["tokens_per_step"] / step_s, rel=2e-3)
        flops = row["flops_per_token"] * row["tokens_per_step"]
        # MFU is written to 4 decimals, and the step time (6) and the peak (0.1 GFLOP/s) it is recomputed from are
        # rounded too: within half of MFU's last digit, plus what half a last digit of each input moves it.
        peak = row["matmul_peak_gflops"]
        mfu = flops / step_s / (peak * 1e9)
        assert row[f"{loop}_mfu"] == pytest.approx(mfu, abs=5.1e-5 + mfu * (5e-7 / step_s + 0.05 / peak))
        assert 0 <= row[f"{loop}_system_cpu_share"] < 1
    assert row["lightning_overhead"] == pytest.approx(row["lightning_step_s"] / row["plain_step_s"] - 1, abs=2e-3)
    assert row["linear_layers_gflops"] > 0
    assert row["linear_layers_share_of_peak"] == pytest.approx(row["linear_layers_gflops"] / peak, abs=1e-3)
    assert "Lightning overhead" in proc.stdout


@pytest.mark.parametrize("counts", [{"steps": 0}, {"rounds": 0}, {"warmup": -1}, {"repeats": 0}])
def test_bench_counts_below_their_minimum_end_in_one_line_before_any_work(counts: dict[str, int]):
    from tinyllm.commands.bench import bench_generate, bench_train

    (name, value), = counts.items()
    with pytest.raises(TinyLLMError, match=f"--{name} must be at least {0 if name == 'warmup' else 1}, got {value}"):
        if name == "repeats":
            bench_generate(config="configs/missing.yaml", **counts)  # refused before the config is read
        else:
            bench_train(config="configs/missing.yaml", **counts)


def test_generate_table_shows_unmeasured_recompute_as_a_dash(capsys: pytest.CaptureFixture[str]):
    from tinyllm.commands.bench import _print_generate

    _print_generate([
        {"setup": "int8", "new_tokens": 500, "cached_tokens_per_s": 735.8, "cached_first_token_ms": 9.8},
        {"setup": "fp32", "new_tokens": 500, "cached_tokens_per_s": 240.0, "cached_first_token_ms": 11.3,
         "recompute_tokens_per_s": 80.0, "speedup": 3.0},
    ])  # fmt: skip
    int8, fp32 = capsys.readouterr().out.splitlines()[1:3]
    assert "nan" not in int8 and int8.split()[3:5] == ["-", "-"]
    assert fp32.split()[3:5] == ["80.0", "3.0x"]


def test_linear_shapes_counts_every_projection_once():
    from tinyllm.commands.bench import linear_shapes

    model = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, mlp="swiglu"))
    hidden = model.layers[0].mlp.up_proj.out_features
    # q, k, v, o per layer; gate and up; down; the head (tied to the embedding, still one product)
    assert linear_shapes(model) == {(32, 32): 8, (32, hidden): 4, (hidden, 32): 2, (32, 65): 1}


def test_linear_layers_flops_weights_each_shape_by_its_layers(monkeypatch: pytest.MonkeyPatch):
    import tinyllm.commands.bench as bench

    monkeypatch.setattr(bench, "_timed", lambda fn: 1.0)  # every shape's forward and backward takes a second
    model = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, mlp="swiglu"))
    shapes = bench.linear_shapes(model)
    flops = sum(count * 6 * 10 * n_in * n_out for (n_in, n_out), count in shapes.items())
    assert bench.linear_layers_flops(model, rows=10, dtype=torch.float32) == pytest.approx(flops / sum(shapes.values()))


def test_linear_layers_flops_of_a_model_without_linear_layers_is_nan():
    from tinyllm.commands.bench import linear_layers_flops

    assert math.isnan(linear_layers_flops(torch.nn.Embedding(4, 4), rows=10, dtype=torch.float32))
