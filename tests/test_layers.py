"""The package's layers point one way: every import, lazy ones included, goes down the list, never up.

    foundations   errors, files, compat
    core          the model and tokenizers: plain PyTorch
    formats       files other software reads
    training      Lightning
    commands      python -m tinyllm (and the registry, tinyllm.__main__)

A DAG by construction: an import from a lower layer to a higher one, or a
cycle inside a layer, fails here with the offending line.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tinyllm

PACKAGE = Path(tinyllm.__file__).parent
LAYERS = [
    {"tinyllm.errors", "tinyllm.files", "tinyllm.compat"},
    {"tinyllm.core"},
    {"tinyllm.formats"},
    {"tinyllm.training"},
    {"tinyllm.commands", "tinyllm.__main__"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for i, roots in enumerate(LAYERS):
        if any(module == r or module.startswith(r + ".") for r in roots):
            return i
    return -1  # the package itself: tinyllm/__init__ re-exports GPT and GPTConfig


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every tinyllm import in ``path``, at any depth (inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("tinyllm")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tinyllm"):
            found.append((node.lineno, node.module))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for m, path in modules.items():
        for _, target in imports_of(path):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]  # `from tinyllm.core.model import GPT` -> tinyllm.core.model
            if target in modules and target != m:
                edges[m].add(target)
    return edges


def test_imports_only_go_down_the_layers():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        for line, target in imports_of(path):
            if layer_of(here) >= 0 and layer_of(target) > layer_of(here):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert upward == [], "imports that point up a layer:\n" + "\n".join(upward)


def test_imports_form_a_dag():
    edges, order, state = graph(), [], {}

    def visit(m: str, stack: list[str]) -> None:
        if state.get(m) == "done":
            return
        assert state.get(m) != "active", "import cycle: " + " -> ".join(stack[stack.index(m):] + [m])
        state[m] = "active"
        for n in sorted(edges[m]):
            visit(n, stack + [m])
        state[m] = "done"
        order.append(m)

    for m in sorted(edges):
        visit(m, [])
    assert len(order) == len(edges) > 30  # every module placed in a topological order


def test_the_layer_check_can_fail(tmp_path: Path):
    bad = tmp_path / "model.py"
    bad.write_text("def f():\n    from tinyllm.training.cli import build_cli\n")
    (line, target), = imports_of(bad)
    assert line == 2 and layer_of(target) > layer_of("tinyllm.core.model")


def test_core_and_formats_import_no_lightning():
    modules = [module_name(p) for p in sorted(PACKAGE.rglob("*.py")) if layer_of(module_name(p)) in (0, 1, 2)]
    code = (f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')); "
            "assert not bad, bad[:5]")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
