"""Property tests: random integer arrays round-trip exactly through every format."""

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from learn2synth.io import read_image, read_npz, write_image

SETTINGS = settings(max_examples=15, deadline=None)


def integer_arrays(dtypes, min_dims, max_dims, low=None, high=None):
    def for_dtype(dtype):
        info = np.iinfo(dtype)
        elements = st.integers(
            max(info.min, low if low is not None else info.min), min(info.max, high or info.max)
        )
        shapes = hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=6)
        return hnp.arrays(dtype, shapes, elements=elements)

    return st.sampled_from(dtypes).flatmap(for_dtype)


def round_trip(name, array):
    with tempfile.TemporaryDirectory() as folder:
        return read_image(write_image(Path(folder) / name, array)).array


@SETTINGS
@given(integer_arrays([np.uint8, np.int8, np.int16, np.uint16, np.int32, np.int64], 2, 4), st.booleans())
def test_nifti(array, compressed):
    back = round_trip("a.nii.gz" if compressed else "a.nii", array)
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@SETTINGS
@given(integer_arrays([np.uint8, np.int16, np.uint16, np.int32, np.int64], 3, 3, -(2**31), 2**31 - 1))
def test_mgz(array):
    np.testing.assert_array_equal(round_trip("a.mgz", array), array)


@SETTINGS
@given(integer_arrays([np.uint8, np.uint16], 2, 2))
def test_png(array):
    back = round_trip("a.png", array)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


@SETTINGS
@given(integer_arrays([np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64], 2, 3))
def test_tiff(array):
    back = round_trip("a.tif", array)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@SETTINGS
@given(integer_arrays([np.uint8, np.int16, np.uint32, np.int64], 1, 4))
def test_npz(array):
    back = round_trip("a.npz", array)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    with tempfile.TemporaryDirectory() as folder:
        arrays = read_npz(write_image(Path(folder) / "b.npz", array))
        assert list(arrays) == ["image"]
