"""Round trips through every format (arrays exact, geometry and header kept) and atomic writes."""

import os

import nibabel as nib
import numpy as np
import pytest
import tifffile
from nibabel.freesurfer.mghformat import MGHImage
from PIL import Image

from learn2synth.errors import InputError
from learn2synth.io import (
    SUPPORTED,
    Volume,
    read_image,
    read_npz,
    squeeze_2d,
    supported_extension,
    write_image,
    write_npz,
)

RNG = np.random.default_rng(0)


def oblique_affine():
    """A rotated, anisotropic voxel-to-world matrix, so a swapped or dropped column cannot go unnoticed."""
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.5, 0.75, 2.0])
    affine[:3, 3] = [-10.0, 4.0, 7.5]
    return affine


def saved_nifti(path, array, slope=None):
    """A NIfTI written by nibabel itself, with distinct qform and sform and a few header fields set."""
    img = nib.Nifti1Image(array, oblique_affine(), dtype=array.dtype)
    img.set_qform(oblique_affine(), code=1)
    qform_offset = np.eye(4)
    qform_offset[:3, 3] = 1.0
    img.set_sform(oblique_affine() @ qform_offset, code=2)
    img.header["descrip"] = b"learn2synth test"
    img.header.set_xyzt_units("mm", "sec")
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    img.to_filename(path)
    return path


def assert_same_geometry(a, b):
    for key in (
        "pixdim",
        "qform_code",
        "sform_code",
        "descrip",
        "xyzt_units",
        "quatern_b",
        "srow_x",
        "srow_z",
    ):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_array_equal(a.get_qform(), b.get_qform())
    np.testing.assert_array_equal(a.get_sform(), b.get_sform())


def folder_names(folder):
    return sorted(p.name for p in folder.iterdir())


# --- NIfTI -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nifti_read_keeps_array_affine_and_header(tmp_path, ext):
    array = RNG.integers(0, 300, (6, 7, 5)).astype(np.int16)
    path = saved_nifti(tmp_path / f"in{ext}", array)
    vol = read_image(path)
    reference = nib.load(path)
    np.testing.assert_array_equal(vol.array, array)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.affine, reference.affine)  # sform wins over qform (code 2 > 1)
    assert vol.format == "nifti" and vol.path == path
    assert vol.spacing == pytest.approx((0.5, 0.75, 2.0))
    assert_same_geometry(vol.header, reference.header)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nifti_write_like_keeps_header_and_sets_dtype(tmp_path, ext):
    image = RNG.normal(size=(6, 7, 5)).astype(np.float32)
    source = read_image(saved_nifti(tmp_path / f"in{ext}", image))
    labels = RNG.integers(0, 45, image.shape)  # int64, as a network's argmax gives
    out = write_image(tmp_path / f"out{ext}", labels, like=source)
    written = nib.load(out)
    assert written.get_data_dtype() == np.uint8  # smallest integer type holding 0-44, not the input's float32
    np.testing.assert_array_equal(np.asarray(written.dataobj), labels)
    assert_same_geometry(written.header, source.header)
    np.testing.assert_array_equal(written.affine, source.affine)


def test_nifti_write_like_does_not_reapply_the_input_scaling(tmp_path):
    stored = RNG.integers(0, 100, (4, 5, 3)).astype(np.int16)
    source = read_image(saved_nifti(tmp_path / "scaled.nii.gz", stored, slope=2.0))
    np.testing.assert_array_equal(source.array, 2.0 * stored)  # read with the slope applied
    result = (source.array / 3).astype(np.float32)
    out = write_image(tmp_path / "out.nii.gz", result, like=source)
    back = read_image(out)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, result)


def test_nifti_without_like_gets_identity_affine_and_keeps_dtype(tmp_path):
    array = RNG.normal(size=(3, 4, 5))
    back = read_image(write_image(tmp_path / "a.nii.gz", array))
    assert back.array.dtype == np.float64
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_array_equal(back.affine, np.eye(4))


def test_nifti_2d_slice_reads_as_3d_and_squeezes_to_2d(tmp_path):
    array = RNG.integers(0, 5, (6, 7, 1)).astype(np.uint8)
    vol = read_image(saved_nifti(tmp_path / "slice.nii.gz", array))
    assert vol.array.shape == (6, 7, 1)
    flat = squeeze_2d(vol)
    assert flat.array.shape == (6, 7)
    np.testing.assert_array_equal(flat.array, array[:, :, 0])
    np.testing.assert_array_equal(flat.affine, vol.affine)
    assert flat.spacing == pytest.approx((0.5, 0.75))
    # written back like the squeezed slice: same values, same geometry
    back = read_image(write_image(tmp_path / "out.nii.gz", flat.array, like=flat))
    np.testing.assert_array_equal(squeeze_2d(back.array), flat.array)
    np.testing.assert_array_equal(back.affine, vol.affine)


def test_squeeze_2d_of_a_middle_singleton_axis_moves_its_affine_column_last():
    affine = oblique_affine()
    vol = Volume(np.arange(12.0).reshape(3, 1, 4), affine=affine)
    flat = squeeze_2d(vol)
    np.testing.assert_array_equal(flat.array, vol.array[:, 0, :])
    np.testing.assert_array_equal(flat.affine[:, 0], affine[:, 0])
    np.testing.assert_array_equal(flat.affine[:, 1], affine[:, 2])
    np.testing.assert_array_equal(flat.affine[:, 2], affine[:, 1])
    np.testing.assert_array_equal(flat.affine[:, 3], affine[:, 3])
    assert flat.spacing == pytest.approx((0.5, 2.0))


def test_squeeze_2d_refuses_a_real_3d_volume(tmp_path):
    with pytest.raises(InputError, match=r"vol\.nii\.gz: expected a 2D image.*\(3, 4, 5\)"):
        squeeze_2d(Volume(np.zeros((3, 4, 5)), path=tmp_path / "vol.nii.gz"))


def test_spacing_defaults_to_one_and_follows_the_affine():
    assert Volume(np.zeros((4, 5))).spacing == (1.0, 1.0)
    assert Volume(np.zeros((4, 5, 6, 2)), affine=oblique_affine()).spacing == pytest.approx((0.5, 0.75, 2.0))


# --- MGZ ---------------------------------------------------------------------------------------------------


def test_mgz_round_trip_keeps_affine_and_header(tmp_path):
    array = RNG.integers(0, 2000, (5, 6, 7)).astype(np.int32)
    img = MGHImage(array, oblique_affine())
    img.header["tr"], img.header["te"], img.header["flip_angle"] = 2300.0, 2.9, 0.157
    img.to_filename(tmp_path / "in.mgz")
    source = read_image(tmp_path / "in.mgz")
    assert source.format == "mgh" and source.array.dtype == np.int32 and source.array.dtype.isnative
    np.testing.assert_array_equal(source.array, array)
    np.testing.assert_allclose(source.affine, oblique_affine(), atol=1e-5)  # MGH stores float32

    result = RNG.normal(size=array.shape)  # float64: MGZ knows float32 only
    written = nib.load(write_image(tmp_path / "out.mgz", result, like=source))
    assert written.get_data_dtype().newbyteorder("=") == np.float32  # MGH is big-endian on disk
    np.testing.assert_array_equal(np.asarray(written.dataobj), result.astype(np.float32))
    np.testing.assert_array_equal(written.affine, source.affine)
    for key in ("delta", "Mdc", "Pxyz_c", "tr", "te", "flip_angle", "goodRASFlag"):
        np.testing.assert_array_equal(written.header[key], source.header[key], err_msg=key)


def test_mgz_picks_a_type_it_can_store_or_refuses(tmp_path):
    back = read_image(write_image(tmp_path / "a.mgz", np.array([[[0, 41, 300]]])))  # int64
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, [[[0, 41, 300]]])
    with pytest.raises(InputError, match=r"big\.mgz: values exceed the int32 range"):
        write_image(tmp_path / "big.mgz", np.array([[[2**40]]]))
    assert not (tmp_path / "big.mgz").exists()


# --- PNG ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "high", "mode"), [(np.uint8, 256, "L"), (np.uint16, 65536, "I;16")])
def test_png_round_trip_8_and_16_bit(tmp_path, dtype, high, mode):
    array = RNG.integers(0, high, (9, 13)).astype(dtype)
    array[0, 0] = high - 1
    out = write_image(tmp_path / "a.png", array)
    with Image.open(out) as img:
        assert img.mode == mode
    vol = read_image(out)
    assert vol.array.dtype == dtype and vol.format == "png"
    np.testing.assert_array_equal(vol.array, array)
    np.testing.assert_array_equal(vol.affine, np.eye(4))
    assert vol.spacing == (1.0, 1.0)


def test_png_stores_integer_valued_arrays_in_the_smallest_depth(tmp_path):
    labels = np.array([[0, 3], [7, 255]])  # int64
    back = read_image(write_image(tmp_path / "a.png", labels))
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, labels)
    back = read_image(write_image(tmp_path / "b.png", np.array([[0.0, 1000.0]])))
    assert back.array.dtype == np.uint16
    np.testing.assert_array_equal(back.array, [[0, 1000]])
    np.testing.assert_array_equal(
        read_image(write_image(tmp_path / "m.png", np.eye(3, dtype=bool))).array, np.eye(3)
    )


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.array([[0.0, 2.5]]), "non-integer values"),
        (np.array([[-1, 2]]), "values 0 to 65535, got -1 to 2"),
        (np.array([[0, 70000]]), "values 0 to 65535"),
        (np.zeros((2, 3, 4), np.uint8), r"2D images, got shape \(2, 3, 4\)"),
    ],
)
def test_png_refuses_what_it_cannot_store_exactly(tmp_path, array, problem):
    with pytest.raises(InputError, match=r"out\.png: .*" + problem):
        write_image(tmp_path / "out.png", array)
    assert folder_names(tmp_path) == []


def test_png_colour_with_equal_channels_reads_as_gray_and_colour_is_refused(tmp_path):
    gray = RNG.integers(0, 256, (5, 6)).astype(np.uint8)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "gray_rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gray_rgb.png").array, gray)
    colour = np.stack([gray, gray, 255 - gray], axis=-1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(InputError, match=r"colour\.png: colour image \(mode RGB\)"):
        read_image(tmp_path / "colour.png")


def test_png_palette_reads_as_indices(tmp_path):
    indices = RNG.integers(0, 4, (5, 6)).astype(np.uint8)
    img = Image.fromarray(indices, mode="P")
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    img.save(tmp_path / "labels.png")
    np.testing.assert_array_equal(read_image(tmp_path / "labels.png").array, indices)


# --- TIFF --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((9, 13), np.float32), ((4, 9, 13), np.uint16), ((5, 8, 3), np.int64), ((1, 4, 5), np.uint8)],
    ids=["2d-float", "stack", "stack-last-axis-3-is-not-colour", "one-slice-stack"],
)
def test_tiff_round_trip_2d_and_stacks(tmp_path, shape, dtype):
    array = (RNG.normal(size=shape) * 1000).astype(dtype)
    vol = read_image(write_image(tmp_path / "a.tiff", array))
    assert vol.format == "tiff" and vol.array.dtype == dtype and vol.array.shape == shape
    np.testing.assert_array_equal(vol.array, array)
    assert vol.spacing == (1.0,) * min(len(shape), 3)


def test_tiff_reads_pages_written_by_another_tool(tmp_path):
    stack = RNG.integers(0, 4000, (3, 6, 7)).astype(np.uint16)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for page in stack:
            tif.write(page, photometric="minisblack", metadata=None)
    np.testing.assert_array_equal(read_image(tmp_path / "pages.tif").array, stack)


def test_tiff_colour_and_4d_are_refused(tmp_path):
    colour = RNG.integers(0, 256, (6, 7, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", colour, photometric="rgb")
    with pytest.raises(InputError, match=r"rgb\.tif: colour image"):
        read_image(tmp_path / "rgb.tif")
    with pytest.raises(InputError, match=r"out\.tif: TIFF stores 2D images or 3D stacks"):
        write_image(tmp_path / "out.tif", np.zeros((2, 3, 4, 5)))


# --- NPZ ---------------------------------------------------------------------------------------------------


def test_npz_named_arrays(tmp_path):
    image, label = RNG.normal(size=(4, 5)).astype(np.float32), RNG.integers(0, 9, (4, 5)).astype(np.uint8)
    write_npz(tmp_path / "pair.npz", {"image": image, "label": label})
    arrays = read_npz(tmp_path / "pair.npz")
    assert sorted(arrays) == ["image", "label"]
    np.testing.assert_array_equal(arrays["image"], image)
    assert arrays["label"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["label"], label)
    np.testing.assert_array_equal(read_image(tmp_path / "pair.npz").array, image)  # "image" comes first

    write_npz(tmp_path / "label.npz", {"label": label, "other": image})
    np.testing.assert_array_equal(read_image(tmp_path / "label.npz").array, label)
    write_npz(tmp_path / "single.npz", {"anything": label})
    np.testing.assert_array_equal(read_image(tmp_path / "single.npz").array, label)


def test_npz_keeps_the_affine_of_like(tmp_path):
    source = Volume(np.zeros((3, 4, 5)), affine=oblique_affine())
    back = read_image(write_image(tmp_path / "a.npz", np.ones((3, 4, 5), np.int16), like=source))
    np.testing.assert_array_equal(back.affine, oblique_affine())
    assert back.array.dtype == np.int16 and back.spacing == pytest.approx((0.5, 0.75, 2.0))


def test_npz_ambiguous_empty_or_pickled_is_refused(tmp_path):
    write_npz(tmp_path / "two.npz", {"a": np.zeros(2), "b": np.ones(2)})
    with pytest.raises(InputError, match=r"two\.npz: NPZ file holds arrays \['a', 'b'\]"):
        read_image(tmp_path / "two.npz")
    write_npz(tmp_path / "empty.npz", {})
    with pytest.raises(InputError, match=r"empty\.npz: NPZ file holds no array"):
        read_image(tmp_path / "empty.npz")
    np.savez(tmp_path / "pickled.npz", image=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match=r"pickled\.npz: cannot read"):
        read_npz(tmp_path / "pickled.npz")


# --- bad files: every one gets an InputError naming it --------------------------------------------------


def cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "name", ["random.nii.gz", "random.nii", "random.mgz", "random.png", "random.tif", "r.npz"]
)
def test_random_bytes_are_refused(tmp_path, name):
    (tmp_path / name).write_bytes(RNG.bytes(2000))
    with pytest.raises(InputError, match=rf"{name}: cannot read: corrupted, truncated or not a"):
        read_image(tmp_path / name)


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("cut.png", RNG.integers(0, 256, (64, 64)).astype(np.uint8)),
        ("cut16.png", RNG.integers(0, 65536, (64, 64)).astype(np.uint16)),
        ("cut.tif", RNG.integers(0, 256, (64, 64)).astype(np.uint8)),
        ("cutstack.tif", RNG.integers(0, 256, (6, 20, 30)).astype(np.uint8)),
        ("cut.nii", RNG.normal(size=(8, 8, 8)).astype(np.float32)),
        ("cut.nii.gz", RNG.normal(size=(8, 8, 8)).astype(np.float32)),
        ("cut.mgz", RNG.normal(size=(8, 8, 8)).astype(np.float32)),
        ("cut.npz", RNG.normal(size=(8, 8, 8))),
    ],
)
def test_files_cut_in_half_are_refused(tmp_path, name, array):
    path = cut_in_half(write_image(tmp_path / name, array))
    with pytest.raises(InputError, match=rf"{name}: cannot read: corrupted"):
        read_image(path)


def test_truncated_imagej_stack_is_refused_not_read_short(tmp_path, caplog):
    """tifffile only logs a cut chain of pages, and returns the first page alone: that must be an error."""
    stack = RNG.integers(0, 256, (6, 20, 30)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True)
    data = (tmp_path / "ij.tif").read_bytes()
    (tmp_path / "ij.tif").write_bytes(data[:1500])  # past the first page and the start of the second
    with pytest.raises(InputError, match=r"ij\.tif: cannot read: corrupted or truncated TIFF"):
        read_image(tmp_path / "ij.tif")
    assert not [r for r in caplog.records if "invalid page offset" in r.getMessage()]


def test_missing_file_folder_and_unsupported_extension(tmp_path):
    with pytest.raises(InputError, match=r"missing\.nii\.gz: file does not exist"):
        read_image(tmp_path / "missing.nii.gz")
    (tmp_path / "folder.nii").mkdir()
    with pytest.raises(InputError, match=r"folder\.nii: is a folder"):
        read_image(tmp_path / "folder.nii")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(InputError, match=r"photo\.jpg: unsupported file type; supported: \.nii, \.nii\.gz"):
        read_image(tmp_path / "photo.jpg")
    with pytest.raises(InputError, match=r"out\.jpg: unsupported file type"):
        write_image(tmp_path / "out.jpg", np.zeros((2, 2), np.uint8))
    with pytest.raises(InputError, match=r"nowhere/out\.png: folder .*nowhere does not exist"):
        write_image(tmp_path / "nowhere" / "out.png", np.zeros((2, 2), np.uint8))


def test_supported_extension_is_case_insensitive_and_prefers_the_long_one():
    assert supported_extension("a/B.NII.GZ") == ".nii.gz"
    assert supported_extension("b.nii") == ".nii"
    assert supported_extension("scan.TIF") == ".tif"
    assert supported_extension("x.gz") is None and supported_extension("x.nii.gz.bak") is None
    assert all(supported_extension(f"file{ext}") == ext for ext in SUPPORTED)


def test_write_like_refuses_an_array_of_another_shape(tmp_path):
    source = Volume(np.zeros((4, 5, 6)))
    with pytest.raises(ValueError, match=r"shape \(5, 4, 6\) cannot be written like"):
        write_image(tmp_path / "a.nii.gz", np.zeros((5, 4, 6)), like=source)


# --- atomic writes -----------------------------------------------------------------------------------------

ARRAY_FOR = {
    ".nii": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    ".nii.gz": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    ".mgz": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    ".mgh": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    ".png": np.arange(12, dtype=np.uint8).reshape(3, 4),
    ".tif": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    ".tiff": np.arange(12, dtype=np.uint8).reshape(3, 4),
    ".npz": np.arange(24, dtype=np.int16).reshape(2, 3, 4),
}
# the library call that does the writing, for each format
WRITER_FOR = {
    ".nii.gz": (nib.Nifti1Image, "to_filename"),
    ".mgz": (MGHImage, "to_filename"),
    ".png": (Image.Image, "save"),
    ".tif": (tifffile, "imwrite"),
    ".npz": (np, "savez_compressed"),
}


@pytest.mark.parametrize("ext", SUPPORTED)
def test_write_leaves_only_the_output_with_usual_permissions(tmp_path, ext):
    out = write_image(tmp_path / f"out{ext}", ARRAY_FOR[ext])
    np.testing.assert_array_equal(read_image(out).array, ARRAY_FOR[ext])
    assert folder_names(tmp_path) == [f"out{ext}"]
    (tmp_path / "plain").touch()  # created the usual way: same permissions expected
    assert os.stat(out).st_mode == os.stat(tmp_path / "plain").st_mode


@pytest.mark.parametrize("ext", sorted(WRITER_FOR))
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("crash")])
def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, ext, error):
    out = tmp_path / f"out{ext}"
    out.write_bytes(b"previous result")

    def half_write_then_fail(*args, **kwargs):
        target = next(a for a in args if isinstance(a, (str, os.PathLike)) or hasattr(a, "write"))
        if hasattr(target, "write"):
            target.write(b"half")
        else:
            open(target, "wb").write(b"half")
        raise error

    owner, name = WRITER_FOR[ext]
    monkeypatch.setattr(owner, name, half_write_then_fail)
    expected = (
        (InputError, r"out\.\w+(\.gz)?: cannot write \(.*No space left")
        if isinstance(error, OSError)
        else (
            RuntimeError,
            "crash",
        )
    )
    with pytest.raises(expected[0], match=expected[1]):
        write_image(out, ARRAY_FOR[ext])
    assert out.read_bytes() == b"previous result"
    assert folder_names(tmp_path) == [out.name]
