"""User-facing errors.

Anything a user can cause (a missing file, a bad config, a corrupt checkpoint,
an unknown character in a prompt) raises :class:`TinyLLMError` with one line
that says what is wrong and what to do. The CLI prints that line and exits
with status 2 instead of showing a traceback.
"""

import functools


class TinyLLMError(Exception):
    """An error the user can fix; its message is one actionable line."""


class ConfigError(TinyLLMError, ValueError):
    """An impossible or unknown model/data configuration."""


PROG = "python -m tinyllm"  # how every usage line names the program


@functools.cache
def help_formatter() -> type:
    """jsonargparse's help formatter, without the docstrings' reST quotes: ``last.ckpt`` reads as last.ckpt."""
    from jsonargparse import DefaultHelpFormatter  # here, not at the top: most importers never print help

    class HelpFormatter(DefaultHelpFormatter):
        def format_help(self) -> str:
            return super().format_help().replace("``", "")

    return HelpFormatter


class Stopped(Exception):
    """A run stopped from outside (SIGTERM) after saving its state: one line, and the signal's exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def one_line(message: str, limit: int = 400) -> str:
    """jsonargparse spreads an error over several indented lines; join them into one."""
    text = " ".join(part.strip() for part in message.splitlines() if part.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def out_of_memory(e: BaseException) -> bool:
    """Python's and numpy's MemoryError, or torch's allocator refusing (a RuntimeError, OutOfMemoryError on a GPU)."""
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(e)
