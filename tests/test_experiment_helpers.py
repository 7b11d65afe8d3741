"""The resolution helpers of the experiment scripts (benchmarks/experiments/common.py), on hand-worked arrays."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "experiments"))
try:
    import common
finally:
    sys.path.pop(0)


def test_block_mean_hand_worked():
    image = np.arange(20, dtype=np.float32).reshape(4, 5)  # the 5th column does not fill a block: dropped
    # blocks: [[0,1],[5,6]] -> 3, [[2,3],[7,8]] -> 5, [[10,11],[15,16]] -> 13, [[12,13],[17,18]] -> 15
    np.testing.assert_array_equal(common.block_mean(image, 2), [[3.0, 5.0], [13.0, 15.0]])


def test_block_mode_hand_worked_with_a_tie():
    labels = np.array([[7, 7, 3, 9],
                       [7, 3, 3, 9],
                       [0, 0, 9, 3],
                       [5, 5, 3, 9]], dtype=np.uint8)
    # blocks: {7,7,7,3} -> 7; {3,9,3,9} tie -> the smaller, 3; {0,0,5,5} tie -> 0; {9,3,3,9} tie -> 3
    out = common.block_mode(labels, 2)
    np.testing.assert_array_equal(out, [[7, 3], [0, 3]])
    assert out.dtype == np.uint8


@pytest.mark.parametrize("factor", [1, 3])
def test_block_mode_matches_a_loop(factor):
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 64, 191, 255], size=(9, 12))
    expected = np.empty((9 // factor, 12 // factor), labels.dtype)
    for i in range(expected.shape[0]):
        for j in range(expected.shape[1]):
            block = labels[i * factor:(i + 1) * factor, j * factor:(j + 1) * factor].ravel()
            values, counts = np.unique(block, return_counts=True)
            expected[i, j] = values[counts.argmax()]
    np.testing.assert_array_equal(common.block_mode(labels, factor), expected)
