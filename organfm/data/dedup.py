"""Exact-duplicate removal by content hash, keeping the first occurrence in record order."""
from __future__ import annotations

from collections import Counter

from organfm.data.records import Record

__all__ = ["drop_duplicates"]


def drop_duplicates(records: list[Record]) -> tuple[list[Record], Counter[str | None]]:
    """Keep the first record of each content hash.

    Args:
        records: in a deterministic order (sources sort by key), so the same copy is always kept.

    Returns:
        The kept records (order preserved) and the number removed per organ.
    """
    seen: set[str] = set()
    kept, removed = [], Counter()
    for record in records:
        if record.content_hash in seen:
            removed[record.organ] += 1
            continue
        seen.add(record.content_hash)
        kept.append(record)
    return kept, removed
