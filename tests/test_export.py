"""Sharing a model ([6/6]): export, exact round trip, Hugging Face Llama parity, tokenizers, publish, safe loading.

Three real Lightning checkpoints are trained for 4 steps each, concurrently, by
``python -m tinyllm fit`` (tests/configs/tiny.yaml, with an evaluation at step 4
so the checkpoint records a val loss): a modern char model, a modern GPT-2 BPE
model, and a vanilla (LayerNorm, GELU, learned positions, biases, untied head)
char model that is not LLaMA-shaped.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinyllm.checkpoint import load_model
from tinyllm.config import GPTConfig
from tinyllm.errors import TinyLLMError
from tinyllm.export import export, load_export, write_export
from tinyllm.model import GPT
from tinyllm.tokenizers import CharTokenizer

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
FIT = ["fit", "--config", TINY, "--trainer.max_steps", "4", "--trainer.val_check_interval", "4"]
RUNS = {
    "char": [],
    "bpe": ["--data.tokenizer", "gpt2"],
    "vanilla": ["--model.arch.norm", "layernorm", "--model.arch.mlp", "gelu", "--model.arch.pos_emb", "learned",
                "--model.arch.bias", "true", "--model.arch.tie_embeddings", "false"],
}  # fmt: skip
LLAMA_RUNS = ["char", "bpe"]
VARIED_TEXT = [
    "ROMEO:\nBut soft, what light through yonder window breaks?",
    "  two  spaces,\n\n\nthree newlines,\ttabs\t\tand trailing spaces   ",
    "It's we'll they're I'd you've 1604 3.14159 -- 'quoted' \"double\"",
    "naïve café, Ünïcödé, 東京, emoji 😀👍🏽, zero\u200bwidth, ÿ",
    "x = {'a': [1, 2]}  # code-ish!!! ???",
]


def env_for_cli(**extra: str) -> dict[str, str]:
    env = os.environ.copy()  # the conftest put TINYLLM_DATA_DIR and TINYLLM_CACHE_DIR here
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread, no OpenMP contention on 2 cores
    env.update(extra)
    return env


def run_cli(*args: object, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "tinyllm", *map(str, args)], cwd=cwd, env=env or env_for_cli(),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


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


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """name → best.ckpt of a 4-step training run; the three runs train at the same time."""
    root = tmp_path_factory.mktemp("export-runs")
    procs = {}
    for name, extra in RUNS.items():
        (root / name).mkdir()
        log = open(root / f"{name}.log", "w")
        procs[name] = (subprocess.Popen([sys.executable, "-m", "tinyllm", *map(str, FIT + extra)], cwd=root / name,
                                        env=env_for_cli(), stdout=log, stderr=subprocess.STDOUT), log)  # fmt: skip
    for name, (proc, log) in procs.items():
        code = proc.wait(timeout=300)
        log.close()
        assert code == 0, f"fit {name} failed:\n{(root / f'{name}.log').read_text()[-3000:]}"
    return {name: root / name / "checkpoints/tiny/best.ckpt" for name in RUNS}


@pytest.fixture(scope="module")
def exports(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name → exported folder of that run's best.ckpt (checked against transformers at export)."""
    root = tmp_path_factory.mktemp("exports")
    return {name: export(ckpt, root / f"tiny-{name}") for name, ckpt in runs.items()}


def logits(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids)


def some_ids(vocab_size: int, length: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(7))


# ----------------------------------------------------------------------------- round trip and layout


@pytest.mark.parametrize("name", list(RUNS))
def test_export_round_trip_is_exact(runs, exports, name):
    ckpt, folder = load_model(runs[name]), load_model(exports[name])
    assert folder.path == exports[name] and folder.step == ckpt.step == 4
    assert folder.metrics == ckpt.metrics and "best_val_loss" in folder.metrics
    assert folder.model.config == ckpt.model.config
    assert folder.tokenizer.state() == ckpt.tokenizer.state()
    ids = some_ids(ckpt.model.config.vocab_size)
    assert torch.equal(logits(ckpt.model, ids), logits(folder.model, ids))
    # Also through load_export directly, and through the weights file's path.
    assert torch.equal(logits(load_export(exports[name]).model, ids), logits(ckpt.model, ids))
    assert torch.equal(logits(load_model(exports[name] / "model.safetensors").model, ids), logits(ckpt.model, ids))


@pytest.mark.parametrize("name", LLAMA_RUNS)
def test_llama_shaped_exports_use_hugging_face_names(exports, name):
    from safetensors import safe_open

    cfg = json.loads((exports[name] / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    arch = cfg["tinyllm"]["arch"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]) == (32, 2, 2)
    assert cfg["num_key_value_heads"] == cfg["num_attention_heads"]
    assert cfg["max_position_embeddings"] == arch["block_size"] == 32
    assert cfg["vocab_size"] == arch["vocab_size"] == (50257 if name == "bpe" else 65)
    assert cfg["tie_word_embeddings"] is True and cfg["attention_bias"] is False and cfg["mlp_bias"] is False
    assert cfg["eos_token_id"] == (50256 if name == "bpe" else None)
    expected = {"model.embed_tokens.weight", "model.norm.weight"}  # tied: no lm_head.weight
    for i in range(2):
        expected |= {f"model.layers.{i}.self_attn.{p}_proj.weight" for p in "qkvo"}
        expected |= {f"model.layers.{i}.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
        expected |= {f"model.layers.{i}.input_layernorm.weight", f"model.layers.{i}.post_attention_layernorm.weight"}
    with safe_open(exports[name] / "model.safetensors", framework="pt") as f:
        assert set(f.keys()) == expected
        assert f.metadata() == {"format": "pt"}


def test_vanilla_exports_and_round_trips_but_claims_no_llama(exports):
    from safetensors import safe_open

    folder = exports["vanilla"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "tinyllm" and "architectures" not in cfg
    assert "LlamaForCausalLM" not in (folder / "config.json").read_text()
    assert cfg["tinyllm"]["weights_layout"] == "tinyllm"
    with safe_open(folder / "model.safetensors", framework="pt") as f:
        keys = set(f.keys())
    assert {"embed_positions.weight", "layers.0.input_norm.bias", "layers.1.mlp.up_proj.bias", "lm_head.weight"} <= keys
    assert not any(k.startswith("model.") for k in keys)
    card = (folder / "README.md").read_text()
    assert "**not** a Llama" in card and "layernorm instead of RMSNorm" in card
    assert "library_name: transformers" not in card


# ----------------------------------------------------------------------------- transformers parity


@pytest.mark.parametrize("name", LLAMA_RUNS)
def test_transformers_llama_logits_match_ours(exports, name):
    from transformers import AutoTokenizer, LlamaForCausalLM

    ours = load_export(exports[name]).model
    theirs = LlamaForCausalLM.from_pretrained(exports[name], attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(exports[name])
    text_ids = tok("ROMEO:\nBut soft, what light through yonder window breaks?", return_tensors="pt").input_ids[:, :32]
    assert text_ids.size(1) >= 12
    for ids in (text_ids, some_ids(ours.config.vocab_size, length=32)):  # real text, and the full context
        with torch.inference_mode():
            diff = (logits(ours, ids) - theirs(ids).logits).abs().max().item()
        assert diff <= 1e-4, f"{name}: max |Δlogit| {diff:.3g} over {ids.shape}"
    # Greedy decoding with Hugging Face's own KV cache gives tinyllm's tokens.
    from tinyllm.generate import generate

    prompt = text_ids[:, :8]
    with torch.inference_mode():
        hf_out = theirs.generate(prompt, max_new_tokens=16, do_sample=False, pad_token_id=0)[0, 8:].tolist()
    assert generate(ours, prompt[0].tolist(), 16, temperature=0).tokens[0] == hf_out


def test_untied_llama_with_other_rope_theta_and_eps_matches_transformers(tmp_path: Path):
    """Settings no training run uses: an untied head, θ = 500000, ε = 1e-6, 4 heads, a custom MLP width.

    Measured: max |Δlogit| ~1e-6 at |logits| ~5; permuting q/k rows to interleaved pairs gives ~6.
    """
    from transformers import LlamaForCausalLM

    config = GPTConfig.preset("modern", n_layer=2, n_head=4, n_embd=32, block_size=24, vocab_size=65, dropout=0.0,
                              tie_embeddings=False, rope_theta=500000.0, norm_eps=1e-6, mlp_hidden=80)  # fmt: skip
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():  # norm gains that differ (a mix-up of the norms would show), and weights 10x
        for name, p in model.named_parameters():  # the init, so attention is peaked and logits are O(5)
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.mul_(10)
    tokenizer = CharTokenizer("".join(chr(32 + i) for i in range(65)))
    folder = write_export(model, tokenizer, tmp_path / "untied", verify=False)
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", framework="pt") as f:
        assert "lm_head.weight" in f.keys()
    ids = some_ids(65, length=24)
    assert torch.equal(logits(load_export(folder).model, ids), logits(model, ids))
    theirs = LlamaForCausalLM.from_pretrained(folder).eval()
    rope = getattr(theirs.config, "rope_parameters", None) or {"rope_theta": theirs.config.rope_theta}
    assert rope["rope_theta"] == 500000.0 and theirs.config.rms_norm_eps == 1e-6
    with torch.inference_mode():
        diff = (logits(model, ids) - theirs(ids).logits).abs().max().item()
    assert diff <= 1e-4, f"max |Δlogit| {diff:.3g}"
    # The test can tell RoPE layouts apart: with q/k rows in Meta's interleaved-pair order
    # (what a wrong export would ship), transformers computes a different model.
    d = config.head_dim
    interleaved = torch.arange(d).view(2, d // 2).t().reshape(-1)  # 0, D/2, 1, D/2+1, ...
    rows = torch.cat([h * d + interleaved for h in range(config.n_head)])
    with torch.no_grad():
        for layer in theirs.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight.copy_(proj.weight[rows])
        wrong = (logits(model, ids) - theirs(ids).logits).abs().max().item()
    assert wrong > 0.1, f"permuted q/k rows went unnoticed ({wrong:.3g})"


# ----------------------------------------------------------------------------- tokenizers


def test_autotokenizer_matches_tiktoken_for_bpe(exports, data_dir: Path):
    from transformers import AutoTokenizer

    ours = load_export(exports["bpe"]).tokenizer
    theirs = AutoTokenizer.from_pretrained(exports["bpe"])
    shakespeare = (data_dir / "input.txt").read_text()[:20000]
    for text in [*VARIED_TEXT, shakespeare, "", " ", "\n\n"]:
        ids = ours.encode(text)
        assert theirs(text)["input_ids"] == ids, repr(text[:60])
        assert theirs.decode(ids) == text
    assert theirs.eos_token_id == 50256 and theirs.convert_ids_to_tokens(50256) == "<|endoftext|>"


def test_autotokenizer_matches_char_tokenizer(exports, data_dir: Path):
    from transformers import AutoTokenizer

    ours = load_export(exports["char"]).tokenizer
    theirs = AutoTokenizer.from_pretrained(exports["char"])
    shakespeare = (data_dir / "input.txt").read_text()[:20000]
    for text in [VARIED_TEXT[0], "  two  spaces,\n\n\nthree newlines, trailing   ", shakespeare, " ", "\n", ours.chars]:
        ids = ours.encode(text)
        assert theirs(text)["input_ids"] == ids, repr(text[:60])
        assert theirs.decode(ids) == text
    assert theirs("".join(ours.chars))["input_ids"] == list(range(65))
    with pytest.raises(Exception):  # like tinyllm, an unknown character is an error, never a wrong id
        theirs("café")["input_ids"]
    # The vanilla model's folder is not a Llama, but its tokenizer still loads.
    assert AutoTokenizer.from_pretrained(exports["vanilla"])("ROMEO:")["input_ids"] == ours.encode("ROMEO:")


# ----------------------------------------------------------------------------- model card


@pytest.mark.parametrize("name", list(RUNS))
def test_model_card_is_generated_from_the_checkpoint(runs, exports, name):
    from tinyllm.files import sha256_of

    loaded = load_model(runs[name])
    card = (exports[name] / "README.md").read_text()
    assert f"{loaded.model.num_parameters():,}" in card
    assert f"{loaded.metrics['best_val_loss']:.4f}" in card and "measured on these weights" in card
    assert "| optimizer steps | 4 |" in card
    assert sha256_of(exports[name] / "model.safetensors") in card and sha256_of(runs[name]) in card
    assert "## Intended use and limits" in card and "| context | 32 tokens |" in card
    if name in LLAMA_RUNS:
        assert "`LlamaForCausalLM`" in card and "Checked at export: transformers" in card
    assert ("GPT-2's byte-level BPE" in card) == (name == "bpe")


# ----------------------------------------------------------------------------- the commands


def test_export_command_then_generate_and_validate_on_the_folder(runs, tmp_path: Path):
    run_dir = runs["char"].parents[2]
    out = tmp_path / "shared-char"
    proc = run_cli("export", "--ckpt_path", runs["char"], "--out_dir", out, "--verify", "false", cwd=run_dir)
    assert proc.returncode == 0, describe(proc)
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
    reported = [line for line in val.stdout.splitlines() if "val_loss" in line]
    assert len(reported) == 1, val.stdout
    value = float(reported[0].replace("│", " ").split()[1])
    assert value == pytest.approx(load_model(runs["char"]).metrics["best_val_loss"], rel=1e-5)


def test_publish_dry_run_lists_the_files_with_sizes(exports, tmp_path: Path):
    proc = run_cli("publish", "--export_dir", exports["char"], "--repo_id", "someone/tiny-char", "--dry_run", "true",
                   cwd=tmp_path, env=env_for_cli(HF_TOKEN=""))  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert "would upload 5 files" in proc.stdout and "huggingface.co/someone/tiny-char (public)" in proc.stdout
    for f in exports["char"].iterdir():
        assert any(f.name in line and f"{f.stat().st_size:,} bytes" in line for line in proc.stdout.splitlines())
    assert "nothing was uploaded" in proc.stdout


def test_publish_without_token_fails_with_one_line(exports, tmp_path: Path):
    env = env_for_cli()
    env.pop("HF_TOKEN", None)
    proc = run_cli("publish", "--export_dir", exports["char"], "--repo_id", "someone/tiny", cwd=tmp_path, env=env)
    assert_one_line_error(proc, "HF_TOKEN")
    assert proc.stdout == ""


def test_publish_offline_fails_with_one_line(exports, tmp_path: Path, monkeypatch):
    # No route to the Hub: a closed local port stands in for being offline (no waiting on DNS).
    env = env_for_cli(HF_TOKEN="hf_fake", HF_ENDPOINT="http://127.0.0.1:9")
    proc = run_cli("publish", "--export_dir", exports["char"], "--repo_id", "someone/tiny", cwd=tmp_path, env=env)
    assert_one_line_error(proc, "someone/tiny", "offline")
    # And with HF_HUB_OFFLINE set, it refuses before any attempt.
    from tinyllm import publish

    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TinyLLMError, match="HF_HUB_OFFLINE"):
        publish.main(["--export_dir", str(exports["char"]), "--repo_id", "someone/tiny"])


def test_publish_checks_the_folder_before_anything_goes_up(exports, tmp_path: Path):
    import shutil

    from tinyllm.publish import plan

    folder = tmp_path / "copy"
    shutil.copytree(exports["char"], folder)
    (folder / "notes.txt").write_text("private notes")
    up = plan(folder, "someone/tiny")
    assert "notes.txt" not in [name for name, _ in up.files] and up.left_out == ["notes.txt"]
    with pytest.raises(TinyLLMError, match="not a Hub repository id"):
        plan(folder, "no-namespace")
    # A card that describes other weights is refused (the original project's mistake).
    shutil.copy(exports["vanilla"] / "README.md", folder / "README.md")
    with pytest.raises(TinyLLMError, match="does not describe these weights"):
        plan(folder, "someone/tiny")


# ----------------------------------------------------------------------------- errors and untrusted files


def test_export_refuses_to_overwrite_other_files_and_reexports_in_place(runs, exports, tmp_path: Path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("keep me")
    with pytest.raises(TinyLLMError, match="not empty and not an export"):
        export(runs["char"], tmp_path / "busy", verify=False)
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "keep me"
    # Re-exporting an export (into a new folder, then over itself) keeps the training record and the bytes.
    again = export(exports["char"], tmp_path / "again", verify=False)
    assert (again / "model.safetensors").read_bytes() == (exports["char"] / "model.safetensors").read_bytes()
    export(again, again, verify=False)
    assert load_export(again).metrics == load_model(runs["char"]).metrics


def test_folders_that_are_not_exports_are_refused_in_one_line(exports, tmp_path: Path):
    import shutil

    folder = tmp_path / "plain-hf"
    shutil.copytree(exports["char"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["tinyllm"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TinyLLMError, match="no 'tinyllm' section") as err:
        load_model(folder)
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TinyLLMError, match="nor an exported model"):
        load_model(tmp_path / "empty")


class Payload:
    """Unpickling this calls open(marker, "w"): a stand-in for code an untrusted file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class SneakyDict(collections.OrderedDict):
    """A dict subclass defined here: weights_only loading must refuse to import it."""


@pytest.mark.parametrize("kind", ["object-that-runs-code", "ordereddict-subclass"])
def test_checkpoint_with_foreign_pickles_is_refused(runs, tmp_path: Path, kind: str):
    marker = tmp_path / "code-ran"
    ckpt = torch.load(runs["char"], map_location="cpu", weights_only=True)
    if kind == "object-that-runs-code":
        ckpt["hyper_parameters"]["extra"] = Payload(marker)
    else:
        ckpt["state_dict"] = SneakyDict(ckpt["state_dict"])
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil)

    with pytest.raises(TinyLLMError, match="refused to load") as err:
        load_model(evil)
    assert "\n" not in str(err.value) and "sources you trust" in str(err.value)
    proc = run_cli("generate", "--ckpt_path", evil, "--max_new_tokens", "5", cwd=tmp_path)
    assert_one_line_error(proc, "refused to load", "evil.ckpt")
    assert not marker.exists(), "unpickling ran code from the checkpoint"


def test_export_module_does_not_import_lightning(exports):
    code = (
        "import sys; from tinyllm.export import load_export; load_export(sys.argv[1]); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')); "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(exports["char"])], env=env_for_cli(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_model_card_usage_lines_load_the_published_name(runs, tmp_path: Path):
    card = (export(runs["char"], tmp_path / "card", verify=False, repo_id="someone/tiny-shakespeare") / "README.md")
    text = card.read_text()
    assert 'from_pretrained("someone/tiny-shakespeare")' in text
    assert "--ckpt_path someone/tiny-shakespeare" in text
    local = export(runs["char"], tmp_path / "local", verify=False) / "README.md"
    assert f'from_pretrained("{tmp_path / "local"}")' in local.read_text()
