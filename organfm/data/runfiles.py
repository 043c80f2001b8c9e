"""Run files the data layer writes (split files, their keys, skip logs), and how their names are shown.

They are written whole or not at all by :func:`organfm.outputs.atomic.write_atomic`.
"""
from __future__ import annotations

__all__ = ["printable"]


def printable(text: str) -> str:
    """``text`` with undecodable bytes of file names (surrogate escapes) shown as ``\\xe9``.

    File names that are not UTF-8 reach Python as lone surrogates, which cannot be printed or written
    to a UTF-8 file; this turns ``caf\\udce9`` into the readable, unambiguous ``caf\\xe9``.

    Args:
        text: a string that may hold lone surrogates.

    Returns:
        ``text`` itself when it encodes as UTF-8, else the backslash-escaped form.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
