"""Texts of a training dataset, and the corpus tokenizer of a run (for sources that feed text towers).

A run's tokenizer is built from its corpus once and written to ``<run>/text/tokenizer.json``; a resumed
run reads that file, so its vocabulary (and so the text tower's shape) never changes under it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from organfm.data.errors import DataError
from organfm.text.captions import TEXT_MODES, caption, record_texts

__all__ = ["dataset_texts", "run_tokenizer"]

TOKENIZER_FILE = Path("text") / "tokenizer.json"  # the small tower's file name inside an export's text/ too


def dataset_texts(dataset: Any, *, mode: str, column: str = "text", modality: str = "medical",
                  with_label: bool = False, where: str = "data") -> list[str] | None:
    """One text per item of a training dataset, or None for ``mode="none"``.

    ``auto`` takes the manifest's ``column`` where the data has one and templates captions from organ and
    modality otherwise; ``column`` requires the column; ``captions`` always templates. A dataset without
    records (the embedded synthetic organs, a shard cache) has organ names only, so it gets captions.

    Raises:
        ValueError: an unknown mode; DataError: ``column`` without the column, or an empty text (naming the
            file of the record).
    """
    if mode not in TEXT_MODES:
        raise ValueError(f"method.texts must be one of {', '.join(TEXT_MODES)}, got {mode!r}")
    if mode == "none":
        return None
    records = getattr(dataset, "records", None)
    if records is None:
        if mode == "column":
            raise DataError(f"{where}: has no manifest, so no {column!r} column; use texts=captions")
        names, ids = list(getattr(dataset, "organs", [])), list(getattr(dataset, "organ_ids", []))
        if len(ids) != len(dataset):
            raise DataError(f"{where}: cannot caption its images (no organ of each item); use texts=none")
        return [caption(names[i] if 0 <= i < len(names) else None, modality=modality) for i in ids]
    kwargs = dict(column=column, modality=modality, with_label=with_label, where=where)
    texts = record_texts(records, mode="column" if mode == "column" else ("captions" if mode == "captions" else "auto"),
                         **kwargs)
    return texts if texts is not None else record_texts(records, mode="captions", **kwargs)


def run_tokenizer(run_dir: Path, texts: list[str]) -> Path:
    """``<run>/text/tokenizer.json``, written from ``texts`` unless it exists (then it is kept).

    Every rank builds the same tokenizer from the same corpus, so each may write it (atomically, same bytes).
    """
    from organfm.text.tokenizer import WordTokenizer

    path = Path(run_dir) / TOKENIZER_FILE
    if not path.is_file():
        # save writes atomically through a temporary of its own name: concurrent ranks never mix
        WordTokenizer.from_corpus(texts).save(path)
    return path
