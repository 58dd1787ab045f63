"""Shared test set-up: the data directory, a private token cache, no network, and the trained runs tests share.

Tests read Tiny Shakespeare and the GPT-2 ranks from $TINYLLM_DATA_DIR, which
defaults here to ../shared/data (beside the repository) when that exists, else
to the repository's data/ folder, where the files are downloaded once. Every
"no network" test points the download URLs at 127.0.0.1:9, which refuses at
once, and an autouse guard fails any test that opens a URL not on 127.0.0.1.

Two kinds of trained run are shared by the whole session: ``fit_run`` (one
tiny.yaml run, 24 steps) and ``runs``/``exports`` (four 4-step runs, char,
BPE, vanilla and the 2025 switches, and their exported folders). Each goes
through ``run_cli``, which forks it from a server that has imported tinyllm
once (tests/helpers/zygote.py).
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import os
import shutil
import subprocess
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one thread each, or their matmuls fight over the cores (OpenMP barriers stall).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

import tinyllm.files
from tests.helpers.cli import TINY, describe, read_scalars, run_cli
from tinyllm.core.tokenizers import GPT2Tokenizer
from tinyllm.files import GPT2_RANKS, SHAKESPEARE
from tinyllm.formats.load import export

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("TINYLLM_DATA_DIR"):
        os.environ["TINYLLM_DATA_DIR"] = str(SHARED_DATA if (SHARED_DATA / "input.txt").exists() else REPO / "data")


@pytest.fixture(autouse=True, scope="session")
def _private_token_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Token caches go to a temp folder, never beside the (read-only) shared corpus.
    os.environ["TINYLLM_CACHE_DIR"] = str(tmp_path_factory.mktemp("token-cache"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data directory, with both files present and verified (downloaded if missing)."""
    from tinyllm.files import GPT2_RANKS, SHAKESPEARE, ensure_file, resolve_data_dir

    ensure_file(SHAKESPEARE)
    ensure_file(GPT2_RANKS)
    return resolve_data_dir()


# ----------------------------------------------------------------------------- data files, no network


REFUSED = "http://127.0.0.1:9/"  # the discard port: nothing listens, connections are refused instantly


PROXY_VARS = ["http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]


SMALL_TEXT = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms against a sea of troubles.\n"
) * 25  # ~4.3 KB, 28 distinct characters


@pytest.fixture(autouse=True)
def _only_localhost_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly (not with an OSError the code would catch) on any non-local URL; never use proxies."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    real_urlopen = urllib.request.urlopen

    def guarded(url, *args, **kwargs):
        full = url if isinstance(url, str) else url.full_url
        if not full.startswith("http://127.0.0.1:"):
            raise AssertionError(f"test tried to reach the network: {full}")
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Both remote files point at a refused port, tiktoken's cache is empty; returns that empty cache dir."""
    monkeypatch.setattr(tinyllm.files, "SHAKESPEARE", dataclasses.replace(SHAKESPEARE, url=REFUSED + "input.txt"))
    monkeypatch.setattr(tinyllm.files, "GPT2_RANKS", dataclasses.replace(GPT2_RANKS, url=REFUSED + "r50k.tiktoken"))
    tk_cache = tmp_path / "tiktoken-cache"
    tk_cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tk_cache))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    return tk_cache


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    d = tmp_path / "empty-data"
    d.mkdir()
    return d


@pytest.fixture
def token_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private, initially empty TINYLLM_CACHE_DIR for this test."""
    d = tmp_path / "token-cache"
    d.mkdir()
    monkeypatch.setenv("TINYLLM_CACHE_DIR", str(d))
    return d


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    p = tmp_path / "corpus" / "small.txt"
    p.parent.mkdir()
    p.write_bytes(SMALL_TEXT.encode("utf-8"))
    return p


@pytest.fixture(scope="module")
def gpt2(data_dir: Path) -> GPT2Tokenizer:
    return GPT2Tokenizer(data_dir / GPT2_RANKS.name)


@pytest.fixture(scope="module")
def corpus(data_dir: Path) -> str:
    return (data_dir / SHAKESPEARE.name).read_text(encoding="utf-8")


class _Server:
    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def served(tmp_path: Path):
    """A local HTTP server over tmp_path/www holding small.txt (= SMALL_TEXT)."""
    root = tmp_path / "www"
    root.mkdir()
    payload = SMALL_TEXT.encode("utf-8")
    (root / "small.txt").write_bytes(payload)
    server = _Server(root)
    try:
        yield server, payload
    finally:
        server.close()


# ----------------------------------------------------------------------------- shared runs


@dataclass
class FitRun:
    dir: Path
    proc: subprocess.CompletedProcess[str]
    files: set[str]  # every file the run wrote, relative to dir, taken right after it finished
    scalars: dict[str, list[tuple[int, float]]]


@pytest.fixture(scope="session")
def fit_run(tmp_path_factory: pytest.TempPathFactory) -> FitRun:
    run_dir = tmp_path_factory.mktemp("fit")
    proc = run_cli("fit", "--config", TINY, cwd=run_dir)
    assert proc.returncode == 0, describe(proc)
    files = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    return FitRun(run_dir, proc, files, read_scalars(run_dir / "logs" / "tiny"))


@pytest.fixture
def fit_copy(fit_run: FitRun, tmp_path: Path) -> Path:
    """A private copy of the fit run's folder, for commands that write into it."""
    dest = tmp_path / "run"
    shutil.copytree(fit_run.dir, dest)
    return dest



FIT = ["fit", "--config", TINY, "--trainer.max_steps", "4", "--trainer.val_check_interval", "4"]


RUNS = {
    "char": [],
    "bpe": ["--data.tokenizer", "gpt2"],
    "vanilla": ["--model.arch.norm", "layernorm", "--model.arch.mlp", "gelu", "--model.arch.pos_emb", "learned",
                "--model.arch.bias", "true", "--model.arch.tie_embeddings", "false"],
    "next_era": ["--model.arch.mlp", "relu2", "--model.arch.qk_norm", "true", "--model.arch.tie_embeddings", "false",
                 "--model.arch.zero_init_proj", "true", "--model.arch.value_embeds", "true",
                 "--model.arch.residual_scalars", "true", "--model.arch.logit_softcap", "15"],
}  # fmt: skip


LLAMA_RUNS = ["char", "bpe"]


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """name → best.ckpt of a 4-step training run (one after another: each takes seconds through the fork server)."""
    root = tmp_path_factory.mktemp("export-runs")
    for name, extra in RUNS.items():
        (root / name).mkdir()
        proc = run_cli(*FIT, *extra, cwd=root / name)
        assert proc.returncode == 0, f"fit {name} failed:\n" + describe(proc)
    return {name: root / name / "checkpoints/tiny/best.ckpt" for name in RUNS}


@pytest.fixture(scope="session")
def exports(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name → exported folder of that run's best.ckpt (checked against transformers at export)."""
    root = tmp_path_factory.mktemp("exports")
    return {name: export(ckpt, root / f"tiny-{name}") for name, ckpt in runs.items()}


# Shared fixtures that train several runs cost 10-40 s per worker: a test that uses one is slow by that alone.
# Every such test goes to one worker (pyproject's --dist loadgroup), so that only that worker trains them.
TRAINING_FIXTURES = {"fit_run", "runs", "exports"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks into the test ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group("trained-runs"))
