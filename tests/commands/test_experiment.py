"""Tests for ``python -m tinyllm experiment swaps``: controlled runs, a paired report, and resuming."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers.cli import assert_one_line_error, describe, run_cli, run_main
from tinyllm.commands.runs import CONFIGS
from tinyllm.commands.experiment import (
    REGULARIZATION,
    RESULT_KEYS,
    SWITCHES_2025,
    VARIANTS,
    missing_baselines,
    run_args,
    summarize,
    swaps,
)
from tinyllm.errors import TinyLLMError
from tinyllm.training.cli import build_cli
from tinyllm.training.precision import cpu_name

SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "swaps_smoke.yaml")


def effective(variant: str, seed: int = 7, config: str = SMOKE) -> dict[str, object]:
    """The whole config one run of the experiment trains with, as LightningCLI resolves it (flattened)."""
    return resolved(run_args(config, variant, seed))


def resolved(args: list[str]) -> dict[str, object]:
    cli = build_cli(args, run=False)
    return {k: v for k, v in _flatten(cli.config.as_dict()).items() if not k.startswith("config.")}  # file names


def _flatten(d: dict | list, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items() if isinstance(d, dict) else enumerate(d):
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, (dict, list)) else {f"{prefix}{k}": v})
    return out


SWITCHES = {"model.arch.norm", "model.arch.mlp", "model.arch.pos_emb", "model.arch.bias"}


@pytest.mark.slow
def test_variants_differ_only_in_their_switches_and_run_names():
    base = effective("vanilla")
    assert base["model.arch.norm"] == "layernorm" and base["model.arch.n_layer"] == 1  # vanilla, at the smoke size
    for variant in ("vanilla+rmsnorm", "vanilla+swiglu", "vanilla+rope", "modern"):
        cfg = effective(variant)
        differs = {k for k in cfg.keys() | base.keys() if cfg.get(k) != base.get(k)}
        # Only architecture switches, and where the run writes (its name decides checkpoints/ and logs/).
        assert differs - {"name"} <= SWITCHES and differs - {"name"}, variant
    # The optimizer swap: its architecture's run plus the optimizer, nothing else.
    cfg, modern = effective("modern+muon"), effective("modern")
    differs = {k for k in cfg.keys() | modern.keys() if cfg.get(k) != modern.get(k)}
    assert differs == {"name", "model.optimizer"} and cfg["model.optimizer"] == "muon"
    assert base["seed_everything"] == base["data.seed"] == 7  # same init seed and same batches for every variant


def test_summary_deltas_are_paired_by_seed():
    def run(variant, seed, final):
        return {"variant": variant, "seed": seed, "parameters": 10, "val_loss": [[5, 3.0], [10, final]],
                "seconds": 60.0, "tokens_per_s": 100.0}
    results = [run("vanilla", 1, 2.0), run("vanilla", 2, 2.4), run("modern", 1, 1.8), run("modern", 2, 2.3)]
    rows = {r["variant"]: r for r in summarize(results)}
    assert rows["modern"]["delta"] == pytest.approx([-0.2, -0.1])  # per seed, not mean minus mean
    assert rows["modern"]["curve"] == pytest.approx([3.0, 2.05])
    assert rows["vanilla"]["delta"] == [] and rows["vanilla"]["baseline"] is None


def test_the_2025_switches_are_measured_against_modern():
    results = [{"variant": v, "seed": s, "parameters": 10, "val_loss": [[10, f]], "seconds": 6.0, "tokens_per_s": 1.0}
               for v, s, f in [("vanilla", 1, 2.0), ("modern", 1, 1.8), ("modern+qk_norm", 1, 1.7)]]
    rows = {r["variant"]: r for r in summarize(results)}
    assert rows["modern+qk_norm"]["baseline"] == "modern" and rows["modern+qk_norm"]["delta"] == pytest.approx([-0.1])
    assert rows["modern"]["baseline"] == "vanilla" and rows["modern"]["delta"] == pytest.approx([-0.2])


@pytest.mark.slow
def test_every_2025_switch_is_one_architecture_field_and_every_sweep_point_one_regularizer_on_modern():
    modern = effective("modern")
    assert set(SWITCHES_2025) | set(REGULARIZATION) | {"modern+muon"} == {v for v in VARIANTS if v.startswith("modern+")}
    for variant in [*SWITCHES_2025, *REGULARIZATION]:
        cfg = effective(variant)
        differs = {k for k in cfg.keys() | modern.keys() if cfg.get(k) != modern.get(k)} - {"name"}
        assert len(differs) == 1, (variant, differs)
        field = next(iter(differs))
        if variant in SWITCHES_2025:
            assert field.startswith("model.arch."), (variant, field)
        else:
            assert field in ("model.arch.dropout", "model.weight_decay"), (variant, field)
            assert cfg[field] == float(re.search(r"[\d.]+$", variant).group()), variant  # the name says the value


@pytest.mark.slow
def test_the_muon_swap_config_trains_modern_as_the_cpu_recipe_does_for_a_fixed_step_count():
    modern = effective("modern", config=str(CONFIGS / "swaps_cpu_muon.yaml"))
    recipe = resolved(["--config", str(CONFIGS / "cpu.yaml"), "--seed_everything", "7", "--data.seed", "7"])
    differs = {k.split(".")[0] if k.startswith("samples") else k
               for k in modern.keys() | recipe.keys() if modern.get(k) != recipe.get(k)}  # fmt: skip
    # Where it writes, a step count instead of a deadline, no samples; and bf16 for every variant, where the
    # recipe's precision is the one auto picks on this machine.
    assert differs - {"trainer.precision"} == {"name", "trainer.max_steps", "trainer.val_check_interval", "samples"}
    assert (modern["trainer.precision"], modern["trainer.max_steps"]) == ("bf16-mixed", 1500)
    assert modern["model.arch.dropout"] == 0.0 and modern["model.optimizer"] == "muon"


def test_modern_is_the_baseline_of_its_rows_without_vanilla():
    assert missing_baselines(["modern", "modern+wd0"]) == []
    assert missing_baselines(["modern"]) == missing_baselines(["vanilla+rope"]) == ["vanilla"]
    assert missing_baselines(["modern+qk_norm"]) == ["modern"]
    assert missing_baselines(["modern", "modern+qk_norm", "vanilla+rope"]) == ["vanilla"]
    results = [{"variant": v, "seed": 1, "parameters": 10, "val_loss": [[10, f]], "seconds": 6.0, "tokens_per_s": 1.0}
               for v, f in [("modern", 1.8), ("modern+wd0", 1.9)]]
    rows = {r["variant"]: r for r in summarize(results)}
    assert rows["modern"]["baseline"] is None and rows["modern"]["delta"] == []
    assert rows["modern+wd0"]["baseline"] == "modern" and rows["modern+wd0"]["delta"] == pytest.approx([0.1])


@pytest.mark.slow
def test_swaps_smoke_writes_table_plot_and_json_and_skips_finished_runs(tmp_path: Path):
    variants = ["vanilla", "modern", "modern+muon"]  # two configs, and one with a delta measured against modern
    args = ("experiment", "swaps", "--config", SMOKE, "--seeds", "[1, 2]", "--variants", f"[{', '.join(variants)}]",
            "--out", "res")
    proc = run_cli(*args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, describe(proc)
    table = (tmp_path / "res/swaps.md").read_text()
    # The machine, and the command that redoes the table, options and all.
    assert f'--config {SMOKE} --seeds "[1, 2]" --variants "[vanilla, modern, modern+muon]"`' in table.splitlines()[0]
    assert f"Measured on {cpu_name()}, " in table
    assert "nats per token (per character for the char tokenizer), over the whole validation split, the last 10% of " \
           "Tiny Shakespeare," in table  # the split each run saved in its config: the smoke config's own
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == variants
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert cells[0][-4] == "(baseline)" and all("±" in c[-4] for c in cells[1:])  # Δ with its spread over 2 seeds
    assert [c[-3] for c in cells] == ["", "vanilla", "modern"]  # what each Δ is against
    assert (tmp_path / "res/swaps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = json.loads((tmp_path / "res/swaps.json").read_text())["runs"]
    assert len(runs) == 2 * len(variants) and all(tuple(r) == (*RESULT_KEYS, "validation") for r in runs)
    # RESULT_KEYS: what a rerun checks (a run finished before runs recorded their split has no "validation")
    steps = {tuple(s for s, _ in r["val_loss"]) for r in runs}
    assert len(steps) == 1 and len(next(iter(steps))) == 2  # every run evaluated at the same steps
    assert all(r["steps"] == r["max_steps"] == 6 and r["tokens_per_s"] > 0 for r in runs)
    assert (tmp_path / "checkpoints/swaps-swaps_smoke/modern+muon-seed2/last.ckpt").exists()
    assert (tmp_path / "logs/swaps-swaps_smoke/modern+muon-seed2").is_dir()
    # Re-running trains nothing and writes the same table, also for a run finished before runs recorded their split.
    older = tmp_path / "checkpoints/swaps-swaps_smoke/modern-seed1/results.json"
    older.write_text(json.dumps({k: v for k, v in json.loads(older.read_text()).items() if k != "validation"}))
    again = run_cli(*args, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, describe(again)
    assert again.stderr.count("already finished") == 2 * len(variants)
    assert (tmp_path / "res/swaps.md").read_text() == table


def test_experiment_bad_options_are_one_line(tmp_path: Path):
    proc = run_main("experiment", "swaps", "--config", "configs/gpu.yaml", cwd=tmp_path)
    assert_one_line_error(proc, "--config configs/gpu.yaml is not a file")
    proc = run_main("experiment", "swaps", "--variants", "[modern]", cwd=tmp_path)
    assert_one_line_error(proc, "vanilla")
    proc = run_main("experiment", "swaps", "--variants", "[vanilla, modern+softcap]", cwd=tmp_path)
    assert_one_line_error(proc, "modern")
    proc = run_main("experiment", "swaps", "--variants", "[vanilla, gpt5]", cwd=tmp_path)
    assert_one_line_error(proc, "gpt5")
    proc = run_main("experiment", "swaps", "--variants", "[vanilla, vanilla]", cwd=tmp_path)
    assert_one_line_error(proc, "twice")
    proc = run_main("experiment", "swaps", "--variants", "[]", cwd=tmp_path)
    assert_one_line_error(proc, "--variants is empty")
    with pytest.raises(TinyLLMError, match="unknown variant.*gpt5"):  # called from Python, past the CLI's type check
        swaps(variants=["vanilla", "gpt5"], out=str(tmp_path / "out"))


@pytest.mark.slow
def test_a_run_of_another_configuration_is_refused_not_mixed_in(tmp_path: Path):
    stale = tmp_path / "checkpoints/swaps-swaps_smoke/vanilla-seed1"
    stale.mkdir(parents=True)
    (stale / "args.json").write_text('["--trainer.max_steps", "5"]')
    (stale / "results.json").write_text("{}")
    proc = run_cli("experiment", "swaps", "--config", SMOKE, "--seeds", "[1]", cwd=tmp_path)
    assert_one_line_error(proc, "another 'swaps_smoke' configuration")


def test_the_default_variants_are_the_gpt2_to_llama_swaps_and_the_help_names_every_variant(tmp_path: Path):
    import inspect

    from tinyllm.commands.experiment import GPT2_TO_LLAMA

    assert inspect.signature(swaps).parameters["variants"].default == list(GPT2_TO_LLAMA)
    assert set(GPT2_TO_LLAMA) <= set(VARIANTS)
    shown = " ".join(run_main("experiment", "swaps", "--help", cwd=tmp_path).stdout.split())  # help wraps lines
    assert all(f"'{v}'" in shown for v in VARIANTS), shown
