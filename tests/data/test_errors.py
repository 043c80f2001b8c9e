import os

from organfm.data import DataError, read_skip_log
from organfm.data.errors import append_skip_log


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_skip_log_round_trip_keeps_one_line_per_skip(tmp_path):
    assert read_skip_log(tmp_path / "missing") == []
    append_skip_log(tmp_path, "a.png", "cannot decode\nimage\t(truncated)")
    append_skip_log(tmp_path, "b.tar::x/y.png", "empty file")
    assert read_skip_log(tmp_path) == [("a.png", "cannot decode image (truncated)"), ("b.tar::x/y.png", "empty file")]


def test_skip_log_keeps_the_first_lines_and_an_exact_total(tmp_path):
    from organfm.data.errors import MAX_LOGGED_SKIPS, count_skips

    for k in range(MAX_LOGGED_SKIPS + 15):  # a truncated volume: one skip per slice
        append_skip_log(tmp_path, f"ct.nii.gz#{k}", "truncated")
    assert len(read_skip_log(tmp_path)) == MAX_LOGGED_SKIPS and read_skip_log(tmp_path)[-1][0].endswith(
        f"#{MAX_LOGGED_SKIPS - 1}")
    assert count_skips(tmp_path) == MAX_LOGGED_SKIPS + 15 and count_skips(tmp_path / "missing") == 0
    assert [p.name for p in tmp_path.iterdir()] == [f"skips-{os.getpid()}.tsv"]  # written whole: no temporaries


def test_non_utf8_names_are_escaped_in_errors_and_skip_logs(tmp_path):
    name = b"/data/liver/caf\xe9\xff.png".decode("utf-8", "surrogateescape")
    error = DataError(f"{name}: cannot decode image")
    assert str(error) == "/data/liver/caf\\xe9\\xff.png: cannot decode image"
    append_skip_log(tmp_path, name, str(error))
    assert read_skip_log(tmp_path) == [("/data/liver/caf\\xe9\\xff.png", str(error))]
