"""An ``organfm embed`` folder as one table: each row's ids (``index.csv``) beside its features.

``features.csv`` (any tool reads it) or ``features.parquet`` (pandas, polars, DuckDB; needs ``pyarrow``):
the columns of ``index.csv`` (row, path, organ, label, split, ...) then ``f0 .. f{E-1}``.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from organfm.features.store import INDEX_CSV, load_features
from organfm.outputs.atomic import write_atomic

__all__ = ["TABLE_FORMATS", "write_table"]

TABLE_FORMATS = ("npy", "csv", "parquet")


def write_table(folder: str | os.PathLike[str], fmt: str) -> Path:
    """Write ``folder/features.<fmt>`` (``csv`` or ``parquet``) from the folder's shards and ``index.csv``.

    Raises:
        ValueError: an unknown format, or ``parquet`` without ``pyarrow`` installed (the message says how).
        DataError: an incomplete or damaged features folder.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(TABLE_FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("--format parquet needs pyarrow, which is not installed: `pip install pyarrow`, or use "
                             "--format csv (the .npy shards and index.csv are written either way)") from None
    folder = Path(folder)
    feats, _ = load_features(folder)
    ids = list(csv.DictReader(io.StringIO((folder / INDEX_CSV).read_text(encoding="utf-8"))))
    if len(ids) != feats.shape[0]:
        raise ValueError(f"{folder / INDEX_CSV}: {len(ids)} rows for {feats.shape[0]} feature rows")
    names = [f"f{j}" for j in range(feats.shape[1])]
    values = feats.numpy()
    path = folder / f"features.{fmt}"
    if fmt == "csv":
        buf = io.StringIO()
        columns = list(ids[0].keys()) if ids else []
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns + names)
        for row, vec in zip(ids, values):
            writer.writerow([row[c] for c in columns] + [repr(float(v)) for v in vec])
        text = buf.getvalue()
        write_atomic(path, text)
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({**{c: [r[c] for r in ids] for c in (ids[0].keys() if ids else [])},
                      **{n: values[:, j] for j, n in enumerate(names)}})
    write_atomic(path, lambda f: pq.write_table(table, f))
    return path
