import pytest
import torch
import torch.nn.functional as F

from learn2synth.synth import phantom_labels


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(64, 64), (32, 36, 30)])
def test_phantoms_are_seeded_complete_and_differ_between_items(shape):
    a = phantom_labels(3, shape, n_labels=8, generator=gen(1))
    b = phantom_labels(3, shape, n_labels=8, generator=gen(1))
    assert torch.equal(a, b) and a.dtype == torch.long and a.shape == (3, 1, *shape)
    assert not torch.equal(a, phantom_labels(3, shape, n_labels=8, generator=gen(2)))
    for item in a:
        assert set(item.unique().tolist()) == set(range(8))
    assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize("shape", [(64, 64), (48, 52, 44)])  # a closed CSF shell needs ~48 voxels
def test_structures_are_nested(shape):
    labels = phantom_labels(2, shape, n_labels=6, generator=gen(3))
    # grow the background by one voxel (face neighbours): it may touch the CSF shell but never anything deeper
    near_background = grow(labels == 0)
    assert torch.all(labels[near_background] <= 1)
    assert not torch.any(grow(labels >= 3) & (labels <= 1))  # white matter and deeper sit inside the cortex


def grow(mask):
    """Dilate a boolean mask (B, 1, *spatial) by one voxel along each axis (face connectivity)."""
    ndim = mask.ndim - 2
    pool = getattr(F, f"max_pool{ndim}d")
    out = mask.clone()
    for axis in range(ndim):
        kernel = [1] * ndim
        kernel[axis] = 3
        padding = [k // 2 for k in kernel]
        out |= pool(mask.float(), kernel, stride=1, padding=padding) > 0
    return out


def test_too_few_labels_is_an_error():
    with pytest.raises(ValueError, match="at least 4"):
        phantom_labels(1, (16, 16), n_labels=3, generator=gen())
