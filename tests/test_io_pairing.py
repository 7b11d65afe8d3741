"""A real-data folder with images/ and labels/: files are paired by name (never by sorted order alone)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from learn2synth.cli import main
from learn2synth.data import read_manifest
from learn2synth.errors import InputError
from learn2synth.io import pair_by_name


def layout(root: Path, images, labels) -> Path:
    for side, names in (("images", images), ("labels", labels)):
        (root / side).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / side / name).write_bytes(b"")
    return root


def names(pairs):
    return [(image.name, label.name, subject) for image, label, subject in pairs]


def test_drive_layout_pairs_on_the_leading_id(tmp_path):
    root = layout(tmp_path, ["21_training.tif", "22_training.tif", "40_training.tif"],
                  ["21_manual1.gif", "22_manual1.gif", "40_manual1.gif"])
    assert names(read_manifest(str(root))) == [
        ("21_training.tif", "21_manual1.gif", "21"),
        ("22_training.tif", "22_manual1.gif", "22"),
        ("40_training.tif", "40_manual1.gif", "40"),
    ]


@pytest.mark.parametrize(("images", "labels", "expected"), [
    (["a.nii.gz", "b.nii.gz"], ["b.mgz", "a.MGZ"], [("a.nii.gz", "a.MGZ", "a"), ("b.nii.gz", "b.mgz", "b")]),
    (["sub-01_T1w.nii.gz", "sub-02_T1w.nii.gz"], ["sub-02_seg.nii.gz", "sub-01_seg.nii.gz"],
     [("sub-01_T1w.nii.gz", "sub-01_seg.nii.gz", "sub-01"), ("sub-02_T1w.nii.gz", "sub-02_seg.nii.gz", "sub-02")]),
    (["img_007.png", "img_012.png"], ["seg_012.png", "seg_007.png"],
     [("img_007.png", "seg_007.png", "007"), ("img_012.png", "seg_012.png", "012")]),
    # sorted order would pair img_10 with seg_002: the numbers pair them right, whatever the zero padding
    (["img_2.png", "img_10.png"], ["mask_002.png", "mask_010.png"],
     [("img_10.png", "mask_010.png", "10"), ("img_2.png", "mask_002.png", "2")]),
    (["scan.nii.gz"], ["seg.nii.gz"], [("scan.nii.gz", "seg.nii.gz", "scan")]),
], ids=["same-stem", "bids-like", "trailing-id", "numbers", "one-pair"])
def test_layouts_pair_by_name(tmp_path, images, labels, expected):
    assert names(read_manifest(str(layout(tmp_path, images, labels)))) == expected


def test_unpaired_files_are_refused_naming_them(tmp_path):
    root = layout(tmp_path, ["21_training.tif", "22_training.tif", "23_training.tif"],
                  ["21_manual1.gif", "22_manual1.gif", "24_manual1.gif"])
    with pytest.raises(InputError) as error:
        read_manifest(str(root))
    message = str(error.value)
    assert message.startswith(f"{root}: cannot pair images with labels by file name: ")
    assert "1 image (23_training.tif) without a label, 1 label (24_manual1.gif) without an image" in message
    assert "manifest" in message and "\n" not in message


def test_at_most_five_unpaired_files_are_listed(tmp_path):
    images = [f"{k}_training.tif" for k in range(21, 29)]
    root = layout(tmp_path, images, ["21_manual1.gif"])
    with pytest.raises(InputError, match=r"7 images \(22_training.tif, 23_training.tif, 24_training.tif, "
                                         r"25_training.tif, 26_training.tif, \.\.\.\) without a label, no label"):
        read_manifest(str(root))


def test_two_files_with_one_stem_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"images a.nii.gz, a.png share a name"):
        pair_by_name([Path("a.nii.gz"), Path("a.png")], [Path("a_seg.png"), Path("b_seg.png")], where="data")


def test_manifests_keep_working(tmp_path):
    layout(tmp_path, ["x.nii.gz"], ["y.nii.gz"])
    (tmp_path / "m.yaml").write_text("pairs:\n  - {image: images/x.nii.gz, label: labels/y.nii.gz, subject: s1}\n")
    (tmp_path / "m.csv").write_text("image,label\nimages/x.nii.gz,labels/y.nii.gz\n")
    assert names(read_manifest(str(tmp_path / "m.yaml"))) == [("x.nii.gz", "y.nii.gz", "s1")]
    assert names(read_manifest(str(tmp_path / "m.csv"))) == [("x.nii.gz", "y.nii.gz", "x")]


def test_train_refuses_an_unpairable_folder_in_one_line(tmp_path, capsys):
    for side in ("images", "labels"):
        (tmp_path / "real" / side).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in (1, 2):
        nib.save(nib.Nifti1Image(rng.random((16, 16, 2)).astype(np.float32), np.eye(4)),
                 tmp_path / "real" / "images" / f"s{k}_img.nii.gz")
    for k in (1, 3):
        nib.save(nib.Nifti1Image(np.ones((16, 16, 2), np.int16), np.eye(4)),
                 tmp_path / "real" / "labels" / f"s{k}_seg.nii.gz")
    argv = ["train", "--quiet", "--out", str(tmp_path / "run")]
    for s in ["method=real", "steps=1", "net.channels=[4,8]", "data.shape=[16,16]", "data.n_classes=4",
              "threads=1", f"data.real={tmp_path / 'real'}"]:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "s2_img.nii.gz" in err and "s3_seg.nii.gz" in err and err.count("\n") == 1


def test_real_scans_are_brought_into_the_label_maps_space_before_slicing(tmp_path):
    """A RAS copy of an LIA scan at 2 mm gives the same 2D examples as the LIA 1 mm scan itself when the
    training space is LIA at 1 mm: slices are cut along the same anatomical axis, at the same voxel size."""
    from learn2synth.data import load_real_pool

    lia = np.array([[-1.0, 0, 0, 10], [0, 0, 1, -5], [0, -1, 0, 7], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    label = np.zeros((8, 6, 4), np.int16)
    label[2:6, 1:5, 1:3] = 1
    label[3:5, 2:4, 1:3] = 2
    image = (label * 10 + rng.random(label.shape)).astype(np.float32)
    # the reference pair, stored in LIA at 1 mm
    for name, array in (("images", image), ("labels", label)):
        (tmp_path / "lia" / name).mkdir(parents=True)
        nib.save(nib.Nifti1Image(array, lia), tmp_path / "lia" / name / "s.nii.gz")
    # the same scan stored RAS, upsampled to 0.5 mm along its first axis (nearest: exact voxel copies)
    for name, array in (("images", image), ("labels", label)):
        ras = nib.as_closest_canonical(nib.Nifti1Image(array, lia))
        data = np.repeat(np.asarray(ras.dataobj), 2, axis=0)
        affine = ras.affine.copy()
        affine[:3, 0] /= 2
        affine[:3, 3] -= affine[:3, 0] / 2  # voxel centres of the halves
        (tmp_path / "ras" / name).mkdir(parents=True)
        nib.save(nib.Nifti1Image(data, affine), tmp_path / "ras" / name / "s.nii.gz")
    pools = {k: load_real_pool(str(tmp_path / k), 2, 2, "none", orientation="LIA", voxel_size=1.0)
             for k in ("lia", "ras")}
    assert len(pools["lia"]) == 2  # the slices (axis 2) holding some label
    for a, b in zip(pools["lia"].labels, pools["ras"].labels, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(pools["lia"].images, pools["ras"].images, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=0.51)  # linear resampling 16 -> 8 voxels (corner-aligned)
    as_stored = load_real_pool(str(tmp_path / "ras"), 2, 2, "none")  # no space given: sliced as stored
    assert as_stored.labels[0].shape != pools["lia"].labels[0].shape


def test_a_folder_without_images_and_labels_names_what_it_found(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    with pytest.raises(InputError, match=r"needs images/ and labels/ inside; images/ is missing \(found: image/, "
                                         r"label/\)"):
        read_manifest(str(tmp_path))
