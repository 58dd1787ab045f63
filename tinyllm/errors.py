"""User-facing errors.

Anything a user can cause (a missing file, a bad config, a corrupt checkpoint,
an unknown character in a prompt) raises :class:`TinyLLMError` with one line
that says what is wrong and what to do. The CLI prints that line and exits
with status 2 instead of showing a traceback.
"""


class TinyLLMError(Exception):
    """An error the user can fix; its message is one actionable line."""


class ConfigError(TinyLLMError, ValueError):
    """An impossible or unknown model/data configuration."""
