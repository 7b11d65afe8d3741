"""Listing input files from a file, a folder or a pattern; cutting volumes into 2D slices."""

import numpy as np
import pytest
import torch

from learn2synth.errors import InputError
from learn2synth.io import list_files, nonempty_slices, slices_3d_to_2d


@pytest.fixture
def folder(tmp_path):
    for name in ["b.png", "a.nii.gz", "c.TIF", "notes.txt", "x.gz", ".a.nii.gz.tmp-1234.nii.gz"]:
        (tmp_path / name).touch()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.mgz").touch()
    (tmp_path / "sub.nii").mkdir()  # a folder with an image-like name is not a file
    return tmp_path


def test_folder_lists_supported_files_sorted(folder):
    assert [p.name for p in list_files(folder)] == ["a.nii.gz", "b.png", "c.TIF"]


def test_pattern_and_recursive_pattern(folder):
    assert [p.name for p in list_files(str(folder / "*.nii*"))] == ["a.nii.gz"]
    assert [p.relative_to(folder).as_posix() for p in list_files(f"{folder}/**/*.*")] == [
        "a.nii.gz",
        "b.png",
        "c.TIF",
        "sub/d.mgz",
    ]


def test_single_file(folder):
    assert list_files(folder / "b.png") == [folder / "b.png"]
    with pytest.raises(InputError, match=r"notes\.txt: unsupported file type"):
        list_files(folder / "notes.txt")


def test_nothing_usable_is_an_error_naming_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: folder has no image files"):
        list_files(tmp_path / "empty")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").touch()
    with pytest.raises(InputError, match=r"docs: folder has no image files"):
        list_files(tmp_path / "docs")
    with pytest.raises(InputError, match=r"missing: no such file or folder"):
        list_files(tmp_path / "missing")
    with pytest.raises(InputError, match=r"\*\.png: no file of a supported format matches"):
        list_files(str(tmp_path / "*.png"))


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_slices_along_each_axis(axis):
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    slices = slices_3d_to_2d(volume, axis)
    assert len(slices) == volume.shape[axis]
    for i, piece in enumerate(slices):
        np.testing.assert_array_equal(piece, np.take(volume, i, axis=axis))


def test_slices_where_the_mask_is_non_empty():
    volume = np.random.default_rng(0).normal(size=(5, 6, 7))
    mask = np.zeros((5, 6, 7), np.uint8)
    mask[1, 2, 3] = mask[3, 0, 0] = 4
    assert nonempty_slices(mask, axis=0) == [1, 3]
    kept = slices_3d_to_2d(volume, 0, keep=mask)
    assert len(kept) == 2
    np.testing.assert_array_equal(kept[0], volume[1])
    np.testing.assert_array_equal(kept[1], volume[3])
    assert len(slices_3d_to_2d(volume, 2, keep=mask)) == 2  # slices 0 and 3
    assert slices_3d_to_2d(volume, 1, keep=np.zeros_like(mask)) == []


def test_slices_of_a_tensor_stay_tensors():
    volume = torch.arange(24.0).reshape(2, 3, 4)
    kept = slices_3d_to_2d(volume, 1, keep=volume > 20)
    assert len(kept) == 1 and torch.equal(kept[0], volume[:, 2, :])


def test_bad_slicing_arguments():
    with pytest.raises(ValueError, match="expected a 3D array"):
        slices_3d_to_2d(np.zeros((2, 3)), 0)
    with pytest.raises(ValueError, match="axis should be -3 to 2"):
        slices_3d_to_2d(np.zeros((2, 3, 4)), 3)
    with pytest.raises(ValueError, match="keep has shape"):
        slices_3d_to_2d(np.zeros((2, 3, 4)), 0, keep=np.zeros((2, 3)))
