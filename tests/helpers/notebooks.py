"""Notebooks run the way Jupyter runs them: nbclient drives a real IPython kernel (magics, ``!`` lines)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient


def parameters_index(nb: nbformat.NotebookNode) -> int:
    """The cell tagged ``parameters`` (papermill's convention): the one a runner may override."""
    [index] = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    return index


def execute(path: Path, cwd: Path, env: dict[str, str], timeout: int = 300, until: str | None = None,
            **parameters: Any) -> nbformat.NotebookNode:
    """Run every cell of ``path`` in a fresh kernel started in ``cwd`` with ``env``; with ``until``, only the
    cells up to the first code cell whose source holds it (where the machine goes away).

    ``parameters`` become a cell right after the ``parameters`` cell, as papermill
    injects them; a cell that raises fails the run (nbclient's CellExecutionError).
    """
    nb = nbformat.read(path, as_version=4)
    if until is not None:
        found = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and until in c.source]
        assert found, f"{path.name} has no code cell that holds {until!r}"
        nb.cells = nb.cells[: found[0] + 1]
    if parameters:
        source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
        nb.cells.insert(parameters_index(nb) + 1, cell)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)
    return nb


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # `!` runs commands in a terminal, so Rich and tqdm print colours


def text_of(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell printed (streams, results, tracebacks), without terminal colour codes."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
        elif out.output_type == "error":
            parts.append("\n".join(out.traceback))
    return ANSI.sub("", "".join(parts)).replace("\r\n", "\n")


def stop_tensorboards(under: Path) -> list[int]:
    """Stop the TensorBoard servers that ``%tensorboard`` started for logs under ``under``: they outlive the kernel."""
    from tensorboard import manager

    stopped = []
    for info in manager.get_all():
        if str(under) in info.logdir:
            try:
                os.kill(info.pid, signal.SIGTERM)
                stopped.append(info.pid)
            except ProcessLookupError:
                pass
    return stopped
