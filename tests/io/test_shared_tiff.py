"""The shared EM stacks read as they are (their TIFF compression comes back from tifffile as a bare integer code,
which once crashed the reader). Skipped without ../shared/data."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from learn2synth.io import read_image

RAW = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "em" / "drosophila_vnc" / "stack1" / "raw"


@pytest.mark.skipif(not (RAW / "00.tif").is_file(), reason="../shared/data (EM stack) not present")
def test_a_shared_sstem_slice_reads_like_tifffile_reads_it():
    array = read_image(RAW / "00.tif").array
    assert array.shape == (1024, 1024) and np.array_equal(array, tifffile.imread(RAW / "00.tif"))
