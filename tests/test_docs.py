"""README.md and docs/ name only code that exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.names import missing_names

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_tinyllm_name_a_page_gives_exists(page: Path):
    assert missing_names(page.read_text(encoding="utf-8")) == []


def test_a_name_that_does_not_exist_is_found():
    assert missing_names("`tinyllm.formats.folder.load_export` and ``tinyllm.core.quantize``") == [
        "tinyllm.formats.folder.load_export"
    ]
