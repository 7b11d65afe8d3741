"""Checks of images and label maps: each bad input gets an InputError naming the file and the problem."""

import numpy as np
import pytest

from learn2synth.errors import InputError
from learn2synth.io import check_image, check_label_map, check_pair


def test_label_map_with_integer_floats_becomes_int64():
    labels = check_label_map(np.array([[0.0, 2.0], [41.0, 3.0]], dtype=np.float32), "labels/a.nii.gz", ndim=2)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [[0, 2], [41, 3]])


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.int64, bool])
def test_integer_label_maps_pass_unchanged_in_value(dtype):
    labels = np.array([[0, 1], [1, 0]], dtype=dtype)
    np.testing.assert_array_equal(check_label_map(labels, "a.png"), labels.astype(np.int64))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([0.0, 2.5, 3.5]), "labels/a.nii.gz: label map has non-integer values (e.g. 2.5)"),
        (np.array([0, -1, 3]), "labels/a.nii.gz: label map has negative values (e.g. -1)"),
        (np.array([0.0, -2.0]), "labels/a.nii.gz: label map has negative values (e.g. -2)"),
        (np.array([0.0, np.nan, np.nan]), "labels/a.nii.gz: label map has NaN values (2 voxels)"),
        (np.array([0.0, np.inf]), "labels/a.nii.gz: label map has infinite values (1 voxel)"),
        (
            np.array([2**63], dtype=np.uint64),
            "labels/a.nii.gz: label map has values too large for int64 (e.g. 9223372036854775808)",
        ),
        (np.array([1e30]), "labels/a.nii.gz: label map has values too large for int64 (e.g. 1e+30)"),
        (np.array(["a"]), "labels/a.nii.gz: label map has <U1 values, expected integers"),
        (np.zeros((2, 3, 4)), "labels/a.nii.gz: expected a 2D label map, got shape (2, 3, 4) (3D)"),
    ],
)
def test_bad_label_maps(array, message):
    with pytest.raises(InputError) as info:
        check_label_map(array, "labels/a.nii.gz", ndim=2 if array.ndim == 3 else None)
    assert str(info.value) == message
    assert info.value.path == "labels/a.nii.gz"


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([0.0, np.nan, 1.0]), "img/a.nii.gz: image has NaN values (1 voxel)"),
        (np.array([np.inf, -np.inf, 1.0]), "img/a.nii.gz: image has infinite values (2 voxels)"),
        (np.array([1 + 2j]), "img/a.nii.gz: image has complex128 values, expected numbers"),
        (np.zeros((2, 3)), "img/a.nii.gz: expected a 3D image, got shape (2, 3) (2D)"),
    ],
)
def test_bad_images(array, message):
    with pytest.raises(InputError) as info:
        check_image(array, "img/a.nii.gz", ndim=3 if array.ndim == 2 else None)
    assert str(info.value) == message


def test_good_image_is_returned_as_is():
    image = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    assert check_image(image, "a.nii.gz", ndim=3) is image
    assert check_image(np.arange(4, dtype=np.uint16), "a.png").dtype == np.uint16


def test_pair_shapes():
    check_pair(np.zeros((4, 5, 6)), np.zeros((4, 5, 6), np.int64), "img/a.nii.gz", "lab/a.nii.gz")
    with pytest.raises(InputError) as info:
        check_pair(np.zeros((4, 5, 6)), np.zeros((4, 5, 7)), "img/a.nii.gz", "lab/a.nii.gz")
    assert str(info.value) == (
        "lab/a.nii.gz: label map has shape (4, 5, 7) but its image img/a.nii.gz has shape (4, 5, 6)"
    )
