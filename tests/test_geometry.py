"""Scans in any orientation and voxel size go to the model's space and back (learn2synth.geometry)."""

import nibabel as nib
import numpy as np
import pytest

from learn2synth.geometry import from_model_space, resize, to_model_space

LIA = np.array([[-1.0, 0, 0, 80], [0, 0, 1, -112], [0, -1, 0, 96], [0, 0, 0, 1]])


def _blob(shape=(20, 24, 28), seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(shape).astype(np.float32)


@pytest.mark.parametrize("codes", ["RAS", "LPI", "SAR", "IPL", "LIA"])
def test_reorienting_a_permuted_flipped_copy_recovers_the_model_grid_exactly(codes):
    data = _blob()
    img = nib.Nifti1Image(data, LIA)
    current = nib.orientations.io_orientation(LIA)
    to_codes = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(tuple(codes)))
    moved = nib.orientations.apply_orientation(data, to_codes)
    affine = LIA @ nib.orientations.inv_ornt_aff(to_codes, data.shape)
    assert nib.aff2axcodes(affine) == tuple(codes)
    in_model, placement = to_model_space(moved, affine, "LIA", 1.0)
    np.testing.assert_array_equal(in_model, data)  # pure permutation and flips: no interpolation at 1 mm
    back = from_model_space(in_model[None], placement)[0]
    np.testing.assert_array_equal(back, moved)
    assert img.shape == in_model.shape


def test_anisotropic_voxels_are_resampled_to_the_model_size_and_back():
    data = np.zeros((40, 20, 12), np.float32)
    affine = np.diag([0.5, 1.0, 3.0, 1.0])
    data[10:30, 5:15, 3:9] = 1.0
    in_model, placement = to_model_space(data, affine, None, 1.0)
    assert in_model.shape == (20, 20, 36)  # 40 x 0.5 mm, 20 x 1 mm, 12 x 3 mm at 1 mm
    back = from_model_space(in_model[None], placement)[0]
    assert back.shape == data.shape
    assert ((back > 0.5) == (data > 0.5)).mean() > 0.97  # up to resampling at the box's edges


def test_resize_aligns_corners_like_a_hand_worked_example():
    out = resize(np.array([0.0, 1.0, 2.0], np.float32)[:, None, None], (5, 1, 1))
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 0.5, 1.0, 1.5, 2.0])
