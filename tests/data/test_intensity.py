import numpy as np
import pytest

from organfm.data import normalize_intensity


def test_minmax_is_per_image():
    x = np.array([[[2.0, 4.0, 6.0]]])
    np.testing.assert_allclose(normalize_intensity(x), [[[0.0, 0.5, 1.0]]])


def test_percentile_clips_outliers():
    x = np.concatenate([np.linspace(0, 1, 1000), [1e6]])[None]
    out = normalize_intensity(x, "percentile", percentiles=(0.0, 99.0))
    assert out.max() == 1.0 and out[0, -1] == 1.0
    assert out[0, 500] == pytest.approx(0.5, abs=0.02)  # the outlier did not squash the rest towards 0


def test_window_in_hu():
    hu = np.array([[-1000.0, -160.0, 40.0, 240.0, 3000.0]])
    np.testing.assert_allclose(normalize_intensity(hu, "window", window=(40, 400)), [[0, 0, 0.5, 1, 1]])
    with pytest.raises(ValueError, match="window"):
        normalize_intensity(hu, "window")


@pytest.mark.parametrize("dtype, value, expected", [
    ("uint8", 255, 1.0), ("uint8", 51, 0.2), ("uint16", 65535, 1.0), ("uint16", 4000, 4000 / 65535),
    ("int16", -32768, 0.0), ("float32", 0.25, 0.25),
])
def test_dtype_divides_by_the_dtype_range(dtype, value, expected):
    out = normalize_intensity(np.array([[float(value)]]), "dtype", dtype=dtype)
    assert out[0, 0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mode", ["minmax", "percentile", "dtype"])
def test_constant_image_gives_zeros_not_nan(mode):
    out = normalize_intensity(np.full((1, 4, 4), 7.0), mode, dtype="float32" if mode == "dtype" else None)
    assert np.isfinite(out).all() and out.dtype == np.float32
    if mode != "dtype":
        assert (out == 0).all()


def test_none_keeps_values_and_input_is_not_modified():
    x = np.array([[1.0, 500.0]], dtype=np.float32)
    assert normalize_intensity(x, "none").tolist() == [[1.0, 500.0]]
    normalize_intensity(x, "minmax")
    assert x.tolist() == [[1.0, 500.0]]
    with pytest.raises(ValueError, match="valid: minmax"):
        normalize_intensity(x, "zscore")
