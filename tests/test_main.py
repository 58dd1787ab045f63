"""The command registry: help lists exactly the registered commands."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.cli import (
    describe,
    run_cli,
)


def test_help_lists_the_commands(tmp_path: Path):
    proc = run_cli("--help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, describe(proc)
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ") and line.strip()}
    assert {"fit", "validate", "generate"} <= listed, proc.stdout
