from organfm.data import build_dataset
from organfm.data.dedup import drop_duplicates
from organfm.data.records import Record


def test_first_occurrence_is_kept_and_removals_counted_per_organ():
    records = [Record(path=f"{k}", reader="image", key=f"{k}", organ=organ, content_hash=h)
               for k, (organ, h) in enumerate([("a", "x"), ("a", "y"), ("a", "x"), ("b", "x"), ("b", "z")])]
    kept, removed = drop_duplicates(records)
    assert [r.key for r in kept] == ["0", "1", "4"]
    assert removed == {"a": 1, "b": 1}


def test_duplicate_files_in_a_folder(tmp_path, make_png, gradient):
    for name in ("b.png", "a.png", "c.png"):
        make_png(tmp_path / "liver" / name, gradient())
    make_png(tmp_path / "liver" / "d.png", gradient(offset=3))
    ds = build_dataset(str(tmp_path), split=None)
    assert [r.key for r in ds.records] == ["liver/a.png", "liver/d.png"]  # sorted order: a.png is the first copy
    assert ds.summary()["duplicates_removed"] == 2 and ds.summary()["duplicates_per_organ"] == {"liver": 2}
    assert len(build_dataset(str(tmp_path), split=None, dedup=False)) == 4
