"""The ``tinyllm.…`` names a text points a reader to, and whether each exists."""

from __future__ import annotations

import importlib
import re


def missing_names(text: str) -> list[str]:
    """Every dotted ``tinyllm.…`` name in backticks in ``text`` that is neither a module nor an attribute of one."""
    missing = []
    for name in sorted(set(re.findall(r"`+(tinyllm(?:\.\w+)+)`+", text))):
        module, attrs = name, []
        while True:
            try:
                obj = importlib.import_module(module)
                break
            except ModuleNotFoundError:
                module, _, attr = module.rpartition(".")
                attrs.insert(0, attr)
        for attr in attrs:
            obj = getattr(obj, attr, None)
        if obj is None:
            missing.append(name)
    return missing
