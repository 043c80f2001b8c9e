"""docs/results.md is shared by every benchmark: each owns the text between its own two markers."""
from __future__ import annotations

from pathlib import Path

__all__ = ["write_section"]


def write_section(path: Path, begin: str, end: str, body: str) -> None:
    """Replace the text between ``begin`` and ``end`` in ``path`` by ``body`` (markers kept), or append it."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Results\n"
    block = f"{begin}\n{body.strip(chr(10))}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
