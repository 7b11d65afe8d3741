"""``learn2synth synth`` end to end: outputs, determinism, geometry, and every bad input (exit 2, one line)."""

import nibabel as nib
import numpy as np
import pytest

from learn2synth.cli import main


def run(capsys, *argv):
    code = main(["synth", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_phantom_3d_same_seed_identical_files_other_seed_differs(tmp_path, capsys):
    args = ["--phantom", "3d", "--n", 3, "--shape", 24, 24, 24, "--batch-size", 2]
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        assert run(capsys, *args, "--seed", seed, "--out", tmp_path / name)[0] == 0
    a, b, c = (tmp_path / n for n in "abc")
    assert files(a) == ["gallery.png"] + [f"{k}_{i:04d}.nii.gz" for k in ("image", "label") for i in range(3)]
    for name in files(a):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "image_0000.nii.gz").read_bytes() != (c / "image_0000.nii.gz").read_bytes()
    image = nib.load(a / "image_0001.nii.gz").get_fdata()
    label = np.asanyarray(nib.load(a / "label_0001.nii.gz").dataobj)
    assert image.shape == label.shape == (24, 24, 24)
    assert 0 <= image.min() and image.max() <= 1 and np.issubdtype(label.dtype, np.integer)


def test_nifti_input_keeps_affine_and_png_input_gives_png(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.zeros((20, 22, 1), np.int16)
    labels[4:16, 5:17] = 1
    labels[8:12, 8:12] = 2
    affine = np.diag([0.7, 0.8, 3.0, 1.0])
    affine[:3, 3] = [10, -5, 2]
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "seg.nii.gz")
    assert run(capsys, "--labels", tmp_path / "seg.nii.gz", "--n", 2, "--out", tmp_path / "o1")[0] == 0
    out = nib.load(tmp_path / "o1" / "image_0001.nii.gz")
    np.testing.assert_allclose(out.affine, affine)
    assert out.shape == (20, 22, 1)
    target = np.asanyarray(nib.load(tmp_path / "o1" / "label_0001.nii.gz").dataobj)
    assert set(np.unique(target)) <= {0, 1, 2}

    from PIL import Image

    Image.fromarray((rng.random((16, 18)) > 0.5).astype(np.uint8) * 3).save(tmp_path / "seg.png")
    assert run(capsys, "--labels", tmp_path / "seg.png", "--n", 1, "--out", tmp_path / "o2")[0] == 0
    assert files(tmp_path / "o2") == ["gallery.png", "image_0000.png", "label_0000.png"]


def write_bytes(path, data):
    path.write_bytes(data)
    return path


def write_nifti(path, array):
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.nii.gz", "no such file"),
        (lambda d: write_nifti(d / "float.nii.gz", np.full((8, 8, 8), 1.5, np.float32)), "non-integer"),
        (lambda d: write_nifti(d / "neg.nii.gz", np.full((8, 8, 8), -1, np.int16)), "negative"),
        (lambda d: write_nifti(d / "nan.nii.gz", np.full((8, 8, 8), np.nan, np.float32)), "NaN"),
        (lambda d: write_bytes(d / "corrupt.nii.gz", b"not a nifti at all"), "corrupt.nii.gz"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "empty"),
    ],
)
def test_bad_label_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, make, message):
    source = make(tmp_path)
    code, out, err = run(capsys, "--labels", source, "--n", 2, "--out", tmp_path / "out")
    assert code == 2
    assert err.count("\n") == 1 and message in err and str(source.name) in err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary leftovers


def test_existing_output_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, _, err = run(capsys, "--phantom", "2d", "--shape", 16, 16, "--out", out)
    assert code == 2 and "not empty" in err
    assert files(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "wild"], "unknown preset"),
        (["--set", "noise.sigma=0.1"], "noise.sigma"),
        (["--set", "gamma.std=abc"], "gamma.std"),
        (["--n", "0"], "--n"),
        (["--shape", "16"], "--shape"),
    ],
)
def test_bad_settings_exit_2_and_name_the_key(tmp_path, capsys, extra, message):
    code, _, err = run(capsys, "--phantom", "2d", "--shape", 16, 16, *extra, "--out", tmp_path / "out")
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_yaml_config_overrides_preset(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("deform:\n  enabled: false\nbias: {enabled: false}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("deform: [unclosed\n")
    assert run(capsys, "--phantom", "2d", "--shape", 16, 16, "--config", tmp_path / "c.yaml", "--out",
               tmp_path / "o")[0] == 0
    code, _, err = run(capsys, "--phantom", "2d", "--shape", 16, 16, "--config", bad, "--out", tmp_path / "o2")
    assert code == 2 and "bad.yaml" in err


def test_a_training_config_gives_its_synthesis_and_label_mapping(tmp_path, capsys, monkeypatch):
    """--config configs/brain_synthseg.yaml: FreeSurfer label values become the 4 tissue classes, extra-cerebral
    CSF (24) and non-brain labels (507) are background, and stripped images hold exact zeros."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the config's paths are relative to the repository
    labels = np.full((40, 40, 1), 507, np.int16)
    labels[8:32, 8:32] = 24
    labels[10:30, 10:30] = 3  # cortex
    labels[14:26, 14:26] = 2  # white matter
    labels[18:22, 18:22] = 4  # ventricle
    write_nifti(tmp_path / "seg.nii.gz", labels)
    code, out, err = run(capsys, "--labels", tmp_path / "seg.nii.gz", "--config", "configs/brain_synthseg.yaml",
                         "--n", "4", "--out", tmp_path / "out", "--set", "deform.enabled=false",
                         "--set", "strip.prob=1.0", "--set", "strip.margin=[0,0]")
    assert code == 0, err
    target = np.asarray(nib.load(tmp_path / "out" / "label_0000.nii.gz").dataobj)[..., 0]
    np.testing.assert_array_equal(np.unique(target), [0, 1, 3, 4])
    assert (target[labels[..., 0] == 24] == 0).all() and (target[labels[..., 0] == 3] == 1).all()
    image = np.asarray(nib.load(tmp_path / "out" / "image_0000.nii.gz").dataobj)[..., 0]
    assert (image[labels[..., 0] == 507] == 0).all() and (image[labels[..., 0] == 2] != 0).any()
