"""Shared test set-up: the data directory and a private token cache.

Tests read Tiny Shakespeare and the GPT-2 ranks from $TINYLLM_DATA_DIR, which
defaults here to ../shared/data (beside the repository) when that exists, else
to the repository's data/ folder, where the files are downloaded once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
