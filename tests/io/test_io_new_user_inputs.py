"""Inputs a new user brings: 0/255 masks, LZW TIFF, GIF, RGB images, label values outside the classes."""

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from learn2synth.errors import InputError
from learn2synth.io import (
    Volume,
    binarize_if_two_valued,
    check_classes,
    list_files,
    read_image,
    read_label_map,
    to_channels_first,
    to_grayscale,
    write_image,
)

RNG = np.random.default_rng(0)
MASK = (RNG.random((9, 11)) > 0.5).astype(np.uint8)  # 0/1


def rgb_image():
    return RNG.integers(0, 256, (9, 11, 3)).astype(np.uint8)


# --- 1. binary masks saved as 0/255 ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mask.png", "mask.gif", "mask.tif"])
def test_0_255_masks_read_as_0_1_with_binary(tmp_path, name):
    Image.fromarray(MASK * 255).save(tmp_path / name)
    np.testing.assert_array_equal(read_label_map(tmp_path / name).array, MASK * 255)  # as stored without it
    labels = read_label_map(tmp_path / name, binary=True).array
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, MASK)


@pytest.mark.parametrize("name", ["bilevel.png", "bilevel.tif"])
def test_bilevel_mode_1_images_read_as_0_1(tmp_path, name):
    Image.fromarray(MASK.astype(bool)).convert("1").save(tmp_path / name)
    np.testing.assert_array_equal(read_label_map(tmp_path / name).array, MASK)
    np.testing.assert_array_equal(read_label_map(tmp_path / name, binary=True).array, MASK)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0, 255], [0, 1]), ([0, 1], [0, 1]), ([0, 7], [0, 1]), ([0, 0], [0, 0]), ([255, 255], [1, 1])],
)
def test_binarize_if_two_valued_maps_0_v_to_0_1(values, expected):
    out = binarize_if_two_valued(np.array(values, np.uint8))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    tensor = binarize_if_two_valued(torch.tensor(values))
    assert torch.equal(tensor, torch.tensor(expected))


@pytest.mark.parametrize("values", [[0, 1, 2], [0, 128, 255], [3, 255], [-1, 0]])
def test_binarize_leaves_other_label_maps_unchanged(values):
    array = np.array(values)
    assert binarize_if_two_valued(array) is array


def test_binarize_of_a_boolean_mask_is_uint8():
    out = binarize_if_two_valued(np.array([True, False]))
    assert out.dtype == np.uint8 and out.tolist() == [1, 0]


def test_binary_read_refuses_a_mask_with_more_than_two_values_naming_them(tmp_path):
    Image.fromarray(np.array([[0, 128], [255, 0]], np.uint8)).save(tmp_path / "soft.png")
    with pytest.raises(InputError, match=r"soft\.png: label values \[128, 255\] are outside the 2 classes 0\.\.1"):
        read_label_map(tmp_path / "soft.png", binary=True)


# --- 2. compressed TIFF --------------------------------------------------------------------------------------


def test_lzw_tiff_written_by_pillow_reads(tmp_path):
    image = RNG.integers(0, 256, (9, 11)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif").array, image)


@pytest.mark.parametrize("compression", ["lzw", "zlib", "zstd"])
def test_compressed_tiff_stacks_written_by_tifffile_read(tmp_path, compression):
    stack = RNG.integers(0, 4000, (3, 9, 11)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack, compression=compression, photometric="minisblack")
    np.testing.assert_array_equal(read_image(tmp_path / "stack.tif").array, stack)


@pytest.fixture
def without_imagecodecs(monkeypatch):
    """tifffile as it behaves when the imagecodecs package is not installed."""
    decompressors = tifffile.TIFF.DECOMPRESSORS
    monkeypatch.setattr(tifffile.tifffile, "imagecodecs", None)
    monkeypatch.setattr(decompressors, "_codecs", {1: decompressors[1]})


def test_without_imagecodecs_pillow_decodes_an_lzw_tiff(tmp_path, without_imagecodecs):
    image = RNG.integers(0, 256, (9, 11)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    with pytest.raises(ValueError, match="imagecodecs"):  # the fixture does hide it from tifffile
        tifffile.imread(tmp_path / "lzw.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif").array, image)


def test_a_tiff_no_decoder_can_read_is_not_called_corrupt(tmp_path, without_imagecodecs):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((2, 4, 5), np.uint8), compression="zstd")
    with pytest.raises(InputError) as error:
        read_image(tmp_path / "stack.tif")
    message = str(error.value)
    assert "compressed with ZSTD" in message and "pip install imagecodecs" in message
    assert "corrupt" not in message and "\n" not in message


# --- 3. GIF -----------------------------------------------------------------------------------------------


def test_a_folder_of_gif_masks_is_listed_and_read_as_gray_values(tmp_path):
    """DRIVE's *_manual1.gif: 0/255 gray, which Pillow and other writers store as palette indices 0/1."""
    for k in (21, 22):
        Image.fromarray(MASK * 255).save(tmp_path / f"{k}_manual1.gif")
    assert [p.name for p in list_files(tmp_path)] == ["21_manual1.gif", "22_manual1.gif"]
    volume = read_image(tmp_path / "21_manual1.gif")
    assert volume.format == "gif" and volume.channels is None
    np.testing.assert_array_equal(volume.array, MASK * 255)


def test_gif_with_a_colour_palette_reads_as_indices_and_gives_its_first_frame(tmp_path):
    indices = RNG.integers(0, 3, (9, 11)).astype(np.uint8)
    frames = [Image.fromarray(indices, mode="P"), Image.fromarray(2 - indices, mode="P")]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    frames[0].save(tmp_path / "labels.gif", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(read_image(tmp_path / "labels.gif").array, indices)


def test_png_with_a_gray_palette_reads_as_gray_values(tmp_path):
    indices = MASK.copy()
    img = Image.fromarray(indices, mode="P")
    img.putpalette([0, 0, 0, 255, 255, 255])
    img.save(tmp_path / "gray_palette.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gray_palette.png").array, MASK * 255)


def test_writing_gif_is_refused_naming_the_file(tmp_path):
    with pytest.raises(InputError, match=r"out\.gif: writing \.gif files is not supported; write \.png instead"):
        write_image(tmp_path / "out.gif", MASK)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_gif_is_refused(tmp_path):
    (tmp_path / "bad.gif").write_bytes(b"GIF89a" + bytes(20))
    with pytest.raises(InputError, match=r"bad\.gif: cannot read: corrupted, truncated or not a GIF file"):
        read_image(tmp_path / "bad.gif")


# --- 4. colour images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fundus.png", "fundus.tif"])
def test_rgb_image_keeps_its_channels_on_a_marked_last_axis(tmp_path, name):
    rgb = rgb_image()
    if name.endswith(".tif"):
        tifffile.imwrite(tmp_path / name, rgb, photometric="rgb", compression="lzw")
    else:
        Image.fromarray(rgb).save(tmp_path / name)
    volume = read_image(tmp_path / name, colour="keep")
    assert volume.channels == 3 and volume.spatial_shape == (9, 11) and volume.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(volume.array, rgb)
    np.testing.assert_array_equal(to_channels_first(volume), np.moveaxis(rgb, -1, 0))
    np.testing.assert_array_equal(read_image(tmp_path / name, colour="green").array, rgb[..., 1])
    luminance = read_image(tmp_path / name, colour="luminance")
    assert luminance.channels is None and luminance.array.dtype == np.float32
    pillow = np.array(Image.fromarray(rgb).convert("L"), dtype=np.float32)
    np.testing.assert_allclose(luminance.array, pillow, atol=1)  # Pillow rounds to integers
    with pytest.raises(InputError, match=rf"{name}: colour image .* grayscale"):
        read_image(tmp_path / name)  # the default still refuses, so a 2D model never sees 3 "slices"


def test_rgba_drops_alpha_and_gray_images_have_no_channel_axis(tmp_path):
    rgb = rgb_image()
    Image.fromarray(np.concatenate([rgb, np.full((9, 11, 1), 255, np.uint8)], axis=-1)).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", colour="keep").array, rgb)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    gray = read_image(tmp_path / "gray.png", colour="keep")
    assert gray.channels is None and to_channels_first(gray).shape == (1, 9, 11)
    assert to_grayscale(gray) is gray


def test_to_grayscale_and_to_channels_first_on_arrays():
    rgb = rgb_image().astype(np.float32)
    volume = Volume(rgb, channels=3)
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(to_grayscale(volume).array, rgb @ weights, rtol=1e-6)
    assert to_channels_first(rgb, channels=3).shape == (3, 9, 11)
    with pytest.raises(ValueError, match="method"):
        to_grayscale(volume, "red")
    with pytest.raises(ValueError, match="colour should be one of"):
        read_image("x.png", colour="rgb")


def test_rgb_label_maps_are_refused_unless_their_channels_are_equal(tmp_path):
    rgb = rgb_image()
    Image.fromarray(rgb).save(tmp_path / "colour_seg.png")
    with pytest.raises(InputError, match=r"colour_seg\.png: colour label map \(3 channels that differ\)"):
        read_label_map(tmp_path / "colour_seg.png")
    Image.fromarray(np.stack([MASK * 255] * 3, axis=-1)).save(tmp_path / "gray_seg.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "gray_seg.png", binary=True).array, MASK)


# --- 7. label values outside the classes -------------------------------------------------------------------


def test_check_classes_names_the_values_outside_the_classes():
    labels = np.array([[0, 1, 2], [5, 2, 9]])
    assert check_classes(labels, 10, "seg.nii.gz") is labels
    with pytest.raises(InputError) as error:
        check_classes(labels, 3, "seg.nii.gz")
    assert str(error.value) == (
        "seg.nii.gz: label values [5, 9] are outside the 3 classes 0..2; set data.n_classes to cover them, "
        "or map them to classes with data.real_label_mapping"
    )
    with pytest.raises(InputError, match=r"label values \[5, 9\]"):
        check_classes(torch.from_numpy(labels), 3, "seg.nii.gz")
    with pytest.raises(InputError, match=r"label values \[-1\] .* must be non-negative"):
        check_classes(np.array([-1, 0]), 3, "seg.nii.gz")


def test_check_classes_lists_at_most_ten_values():
    with pytest.raises(InputError, match=r"\[2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 8 more\]"):
        check_classes(np.arange(20), 2, "many.png")
