"""Short forms of user inputs for error messages."""
from __future__ import annotations

from typing import Any


def shorten(value: Any, limit: int = 80) -> str:
    """``repr`` of ``value`` cut to its first line and at most ``limit`` characters.

    Inputs are echoed in error messages to name them; a whole CIF text or a long
    object would bury the message, so the rest is replaced by ``...`` and the length.

    Examples
    --------
    >>> shorten("data_NaCl\\n_cell_length_a 5.64\\n")
    "'data_NaCl'... (30 characters, 2 lines)"
    """
    text = value if isinstance(value, str) else repr(value)
    first = text.split("\n", 1)[0].rstrip("\r")
    if first == text and len(text) <= limit:
        return repr(value) if isinstance(value, str) else text
    if len(first) > limit:
        first = first[:limit]
    shown = repr(first) if isinstance(value, str) else first
    lines = len(text.splitlines())
    return f"{shown}... ({len(text)} characters" + (f", {lines} lines)" if lines > 1 else ")")
