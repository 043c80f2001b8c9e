from organfm.data import DataError, read_skip_log
from organfm.data.errors import append_skip_log


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_skip_log_round_trip_keeps_one_line_per_skip(tmp_path):
    assert read_skip_log(tmp_path / "missing") == []
    append_skip_log(tmp_path, "a.png", "cannot decode\nimage\t(truncated)")
    append_skip_log(tmp_path, "b.tar::x/y.png", "empty file")
    assert read_skip_log(tmp_path) == [("a.png", "cannot decode image (truncated)"), ("b.tar::x/y.png", "empty file")]
