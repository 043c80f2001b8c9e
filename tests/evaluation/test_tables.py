"""An embed folder as one table: ``index.csv``'s columns, then ``f0 .. f{E-1}`` holding the stored features exactly;
a row count that does not match, an unknown format and parquet without pyarrow are errors naming the fix."""
from __future__ import annotations

import csv

import pytest
import torch

from organfm.evaluation.tables import write_table
from organfm.features.store import INDEX_CSV, embed_dataset, load_features


class _Images(torch.utils.data.Dataset):
    organs = ["a", "b"]

    def __init__(self, n: int = 5) -> None:
        self.images = torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "organ": i % 2, "index": i}


@pytest.fixture
def folder(tmp_path):
    embed_dataset("random:test_resnet", _Images(), tmp_path / "f", shard_size=2)  # three shards: 2 + 2 + 1 rows
    return tmp_path / "f"


def test_the_csv_is_the_index_beside_the_exact_features(folder):
    path = write_table(folder, "csv")
    assert path == folder / "features.csv"
    feats, _ = load_features(folder)
    index = list(csv.DictReader(open(folder / INDEX_CSV)))
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    width = feats.shape[1]
    assert header == list(index[0]) + [f"f{j}" for j in range(width)]
    assert len(rows) == len(index) == 5
    for row, ids, vec in zip(rows, index, feats):
        assert row[:len(ids)] == list(ids.values())
        # repr of the float32 value read back as float32 is the stored number, bit for bit
        assert torch.equal(torch.tensor([float(v) for v in row[len(ids):]], dtype=torch.float32), vec)


def test_a_row_count_that_does_not_match_the_features_is_refused(folder):
    lines = (folder / INDEX_CSV).read_text().splitlines(keepends=True)
    (folder / INDEX_CSV).write_text("".join(lines[:-1]))
    with pytest.raises(ValueError, match=r"index.csv: 4 rows for 5 feature rows"):
        write_table(folder, "csv")
    assert not (folder / "features.csv").exists()


def test_unknown_formats_and_parquet_without_pyarrow_name_the_fix(folder, no_pyarrow):
    with pytest.raises(ValueError, match=r"--format 'xlsx': choose one of npy, csv, parquet"):
        write_table(folder, "xlsx")
    with pytest.raises(ValueError, match=r"--format parquet needs pyarrow.*`pip install pyarrow`, or use --format csv"):
        write_table(folder, "parquet")


def test_the_parquet_table_holds_the_same_columns_and_numbers(folder):
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(write_table(folder, "parquet")).to_pydict()
    feats, _ = load_features(folder)
    index = list(csv.DictReader(open(folder / INDEX_CSV)))
    assert list(table) == list(index[0]) + [f"f{j}" for j in range(feats.shape[1])]
    assert table["f0"] == feats[:, 0].tolist() and table[list(index[0])[0]] == [r[list(index[0])[0]] for r in index]
