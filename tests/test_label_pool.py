"""Reading label maps into a LabelPool: sliced, compact, and read once per process for the same files."""

import os

import nibabel as nib
import numpy as np
import torch

from learn2synth import data


def write(path, array):
    nib.save(nib.Nifti1Image(array.astype(np.int16), np.eye(4)), str(path))


def test_pool_slices_maps_and_rereads_only_changed_files(tmp_path, monkeypatch):
    a = np.zeros((6, 5, 4), np.int16)
    a[1:4, 1:3, :] = 7
    write(tmp_path / "a.nii.gz", a)
    reads = []
    real_read = data._read_label_maps
    monkeypatch.setattr(data, "_read_label_maps", lambda *args: reads.append(1) or real_read(*args))
    data._LAST_POOL.clear()

    pool = data.load_label_pool(str(tmp_path), 2, 2)
    assert len(pool.maps) == 4 and pool.values() == [0, 7]  # one 2D map per slice of axis 2
    assert torch.equal(pool.maps[0][0].long(), torch.from_numpy(a[1:4, 1:3, 0]).long())  # cropped to the labels
    again = data.load_label_pool(str(tmp_path), 2, 2)
    assert len(reads) == 1 and again.maps is not pool.maps  # remembered, but each pool has its own list
    data.load_label_pool(str(tmp_path), 2, 0)
    assert len(reads) == 2  # another slicing is another pool

    a[0, 0, 0] = 9
    write(tmp_path / "a.nii.gz", a)
    stat = os.stat(tmp_path / "a.nii.gz")
    os.utime(tmp_path / "a.nii.gz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = data.load_label_pool(str(tmp_path), 2, 2)
    assert len(reads) == 3 and changed.values() == [0, 7, 9]
