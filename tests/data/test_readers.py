import io

import numpy as np
import pytest
from PIL import Image

from organfm.data import DataError, build_dataset, create_reader, find_reader, list_readers
from organfm.data.readers import ImageReader, NpzReader


def test_registry_has_every_reader():
    assert {"image", "dicom", "nifti", "npz"} <= set(list_readers())
    with pytest.raises(ValueError, match="valid: .*dicom"):
        create_reader("no_such_reader")


@pytest.mark.parametrize("name, expected", [
    ("a/b/scan.nii.gz", "nifti"), ("scan.NII", "nifti"), ("x.png", "image"), ("x.JPEG", "image"),
    ("slice.dcm", "dicom"), ("pneumonia.npz", "npz"), ("notes.txt", None), ("archive.gz", None),
])
def test_find_reader_by_suffix(name, expected):
    assert find_reader(name) == expected


def test_find_reader_recognises_dicom_without_suffix():
    head = b"\0" * 128 + b"DICM"
    assert find_reader("CT.1.3.12.2.1107.5.16573", head) == "dicom"
    assert find_reader("CT.1.3.12.2.1107.5.16573", b"\0" * 132) is None


def test_png_16bit_keeps_values_above_255(tmp_path, make_png):
    pixels = np.array([[0, 255, 256, 4000], [65535, 1, 2, 3]], dtype=np.uint16)
    path = make_png(tmp_path / "x16.png", pixels)
    array, meta = ImageReader().read(str(path))
    assert array.dtype == np.float32 and array.shape == (1, 2, 4)
    np.testing.assert_array_equal(array[0], pixels.astype(np.float32))
    assert meta["dtype"] == "uint16"


def test_png_16bit_dtype_normalisation_in_dataset(tmp_path, make_png):
    pixels = np.array([[0, 4000], [300, 65535]], dtype=np.uint16)
    make_png(tmp_path / "organ" / "x16.png", pixels)
    ds = build_dataset(str(tmp_path), split=None, intensity="dtype")
    np.testing.assert_allclose(ds[0]["image"][0].numpy(), pixels / 65535.0, rtol=1e-6)


def test_png_and_jpeg_8bit(tmp_path, make_png, gradient):
    pixels = gradient(16, 16)
    png = ImageReader().read(str(make_png(tmp_path / "a.png", pixels)))[0]
    np.testing.assert_array_equal(png[0], pixels)
    jpeg, meta = ImageReader().read(str(make_png(tmp_path / "a.jpg", pixels)))
    assert jpeg.shape == (1, 16, 16) and meta["dtype"] == "uint8"
    assert np.abs(jpeg[0] - pixels).mean() < 8  # lossy, but the same picture


def test_rgb_is_channel_first(tmp_path, make_png):
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 50
    array, meta = ImageReader().read(str(make_png(tmp_path / "c.png", rgb)))
    assert array.shape == (3, 4, 5) and meta["photometric"] == "RGB"
    assert (array[0] == 200).all() and (array[1] == 0).all() and (array[2] == 50).all()


def test_image_from_bytes_names_member_in_errors():
    with pytest.raises(DataError, match=r"pack\.tar::a/b\.png: cannot decode"):
        ImageReader().read("pack.tar", data=b"\x89PNG\r\n\x1a\n" + b"junk" * 10, member="a/b.png")


def test_truncated_png_fails_at_read_with_file_name(tmp_path, make_png, gradient):
    path = make_png(tmp_path / "t.png", gradient(64, 64, scale=7))
    path.write_bytes(path.read_bytes()[:60])
    reader = ImageReader()
    reader.read_header(str(path))  # the signature is intact: a cheap check passes
    with pytest.raises(DataError, match=r"t\.png: cannot decode image"):
        reader.read(str(path))


def test_header_rejects_wrong_signature_and_empty(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"GIF89a not a png")
    with pytest.raises(DataError, match=r"fake\.png: not a PNG"):
        ImageReader().read_header(str(fake))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: empty file"):
        ImageReader().read_header(str(empty))


def test_palette_image_becomes_rgb(tmp_path):
    img = Image.new("P", (3, 2))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    array, _ = ImageReader().read("p.png", data=buf.getvalue())
    assert array.shape == (3, 2, 3)
    assert array[:, 1, 1].tolist() == [255, 0, 0] and array[:, 0, 0].tolist() == [0, 0, 0]


def test_npz_reader_rows_and_layouts(tmp_path):
    gray = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    rgb = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    vol = np.arange(2 * 5 * 3 * 4, dtype=np.uint8).reshape(2, 5, 3, 4)
    path = tmp_path / "d.npz"
    np.savez(path, gray_images=gray, rgb_images=rgb, vol_images=vol)
    reader = NpzReader()
    np.testing.assert_array_equal(reader.read(str(path), member="gray_images", row=1)[0], gray[1][None])
    np.testing.assert_array_equal(reader.read(str(path), member="rgb_images", row=0)[0], np.moveaxis(rgb[0], -1, 0))
    np.testing.assert_array_equal(reader.read(str(path), member="vol_images", row=1)[0], vol[1][None])
    np.testing.assert_array_equal(reader.read(str(path), member="vol_images", row=1, index=2)[0], vol[1, 2][None])
    with pytest.raises(DataError, match=r"d\.npz::gray_images: row 5 out of range"):
        reader.read(str(path), member="gray_images", row=5)


def test_decompression_bombs_are_refused_before_decoding(tmp_path, make_png, gradient):
    # 30000 x 30000 one-bit pixels compress to ~100 kB; decoding them would need 900 MB
    Image.new("1", (30000, 30000)).save(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 1 << 20
    with pytest.raises(DataError, match=r"bomb\.png: .*(exceeds|[Dd]ecompression ?[Bb]omb)"):
        ImageReader().read(str(tmp_path / "bomb.png"))
    make_png(tmp_path / "small.png", gradient(16, 16))
    assert ImageReader(max_image_pixels=256).read(str(tmp_path / "small.png"))[0].shape == (1, 16, 16)
    with pytest.raises(DataError, match=r"small\.png: image of 16 x 16 pixels exceeds the cap of 255 "
                                        r"\(max_image_pixels"):
        ImageReader(max_image_pixels=255).read(str(tmp_path / "small.png"))
    ds = build_dataset(str(tmp_path / "small.png"), split=None, max_image_pixels=255)
    with pytest.raises(DataError, match="exceeds the cap of 255"):
        ds[0]
