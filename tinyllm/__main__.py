"""``python -m tinyllm COMMAND``: the one registry of commands.

Each command is a typed function whose docstring is its help; jsonargparse
builds the parsers from the signatures, so ``--help`` can never drift from
what a command takes. ``fit`` and ``validate`` are Lightning's (LightningCLI
parses their options). A command's module is imported only when it runs, so
``generate`` does not pay for Lightning's start-up. Every error a user can
cause ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

from jsonargparse import ArgumentError, ArgumentParser

import tinyllm
from tinyllm.compat import ignore_lightnings_own_deprecations
from tinyllm.errors import PROG, Stopped, TinyLLMError, help_formatter, one_line, out_of_memory

# name -> "module:function", or a group of them (`bench generate`, `bench train`)
COMMANDS: dict[str, str | dict[str, str]] = {
    "fit": "tinyllm.commands.train:fit",
    "validate": "tinyllm.commands.train:validate",
    "prepare": "tinyllm.commands.prepare:prepare",
    "generate": "tinyllm.commands.generate:generate",
    "bench": {"generate": "tinyllm.commands.bench:bench_generate", "train": "tinyllm.commands.bench:bench_train"},
    "export": "tinyllm.commands.export:export",
    "publish": "tinyllm.commands.publish:publish",
    "card": "tinyllm.commands.card:card",
    "plot": "tinyllm.commands.plot:plot",
    "inspect": "tinyllm.commands.inspect_model:inspect",
    "experiment": {"swaps": "tinyllm.commands.experiment:swaps", "budgets": "tinyllm.commands.budgets:budgets",
                   "tokenizers": "tinyllm.commands.tokenizers:tokenizers",
                   "scaling": "tinyllm.commands.scaling:scaling"},
}
LIGHTNING_COMMANDS = ("fit", "validate")  # LightningCLI parses their options


def command(target: str) -> Callable[..., Any]:
    """The function ``module:function`` names."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def docstring(target: str) -> str:
    """The docstring of the function ``module:function`` (of the module, for ``module``), read from its source.

    Reading, not importing: the full command list then costs no module's imports (Lightning's take seconds).
    """
    module, _, name = target.partition(":")
    tree: ast.AST = source_tree(module)
    if name:
        tree = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name)
    return ast.get_docstring(tree) or ""


@functools.cache
def source_tree(module: str) -> ast.Module:
    """``module``'s parsed source, once per process (a group's commands share one module)."""
    return ast.parse(Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8"))


def summary(target: str | dict[str, str]) -> str:
    """A command's one-line help: the first line of its docstring (of its module's, for a group)."""
    doc = docstring(next(iter(target.values())).partition(":")[0] if isinstance(target, dict) else target)
    return doc.splitlines()[0] if doc else ""


def new_parser(prog: str, description: str) -> ArgumentParser:
    """A parser whose errors are raised (main makes them one line) and whose help has no reST quotes."""
    return ArgumentParser(prog=prog, description=description, exit_on_error=False, formatter_class=help_formatter())


def build_parser(only: str | None = None) -> ArgumentParser:
    """The parser of the command ``only``, from its function's signature and docstring; without ``only``, the list.

    Adding a command's options imports its module: ``only`` keeps ``generate``
    from importing the modules of the others, Lightning among them, and the
    list of every command (``--help``) imports none.
    """
    parser = new_parser(PROG, tinyllm.__doc__.splitlines()[0])
    if only is None:
        add_commands(parser, COMMANDS, with_options=False)
    else:
        add_commands(parser, {only: COMMANDS[only]})
    return parser


def add_commands(parser: ArgumentParser, commands: dict[str, Any], with_options: bool = True) -> None:
    """Add ``commands`` as subcommands of ``parser`` (jsonargparse wants each level added before the next)."""
    subcommands = parser.add_subcommands(dest="command", required=True)
    for name, target in commands.items():
        prog = f"{parser.prog} {name}"
        line = summary(target)
        if isinstance(target, dict):
            sub = new_parser(prog, line)
            subcommands.add_subcommand(name, sub, help=line)
            add_commands(sub, target, with_options)
            continue
        sub = new_parser(prog, docstring(target).split("\n\nArgs:")[0])
        if with_options and name not in LIGHTNING_COMMANDS:
            sub.add_function_arguments(command(target), as_group=False)
        subcommands.add_subcommand(name, sub, help=line)


def run(argv: list[str]) -> None:
    """Run the command ``argv`` names with the options that follow it."""
    if argv and argv[0] in LIGHTNING_COMMANDS:
        command(COMMANDS[argv[0]])(argv[1:])
        return
    parser = build_parser(only=argv[0] if argv and argv[0] in COMMANDS else None)
    try:
        cfg = parser.parse_args(argv)
    except ArgumentError as e:
        raise TinyLLMError(one_line(str(e))) from None
    target: Any = COMMANDS
    while isinstance(target, dict):  # walk down to the chosen function
        name = cfg.pop("command") if "command" in cfg else cfg["subcommand"]
        cfg = cfg[name]
        target = target[name]
    kwargs = {k: v for k, v in cfg.as_dict().items() if k not in ("command", "__path__")}
    command(target)(**kwargs)


def main(argv: list[str] | None = None) -> None:
    ignore_lightnings_own_deprecations()  # export, card and bench reach Lightning's utilities outside the CLI too
    try:
        run(sys.argv[1:] if argv is None else argv)
    except TinyLLMError as e:
        # Raised in a DataLoader worker, it arrives re-raised with the worker's traceback before its message.
        message = (str(e).rstrip().splitlines() or [""])[-1].removeprefix(f"{TinyLLMError.__module__}.TinyLLMError: ")
        print(f"tinyllm: error: {message}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a file the operating system refused where no command foresaw it: still one line
        print(f"tinyllm: error: {e.filename or 'a file'}: {e.strerror or e}: check the path, its permissions and "
              "the free space, then run the command again", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    except (MemoryError, RuntimeError) as e:  # options that ask for more than the machine has (10^10 windows)
        if not out_of_memory(e):
            raise
        print("tinyllm: error: out of memory: ask for less (a smaller batch, model or number of samples); a fit that "
              "saved a checkpoint resumes with --ckpt_path last", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    except Stopped as e:
        print(f"tinyllm: {e}", file=sys.stderr)
        sys.exit(e.status)
    except KeyboardInterrupt:
        print("tinyllm: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
