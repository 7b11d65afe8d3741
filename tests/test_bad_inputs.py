"""The bad inputs of docs/bad_inputs.md that other test files do not already cover, through the CLI.

Each gets exit code 2, one line on stderr naming the file or key, no traceback, and nothing overwritten.
"""

import nibabel as nib
import numpy as np
import pytest

from learn2synth.cli import main

TINY = ["steps=1", "net.channels=[4,8]", "data.shape=[16,16]", "data.n_classes=4", "threads=1",
        "data.phantom_count=4"]


def nifti(path, array):
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


def good_pair(folder, name="a", shape=(16, 16, 2)):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    label = np.zeros(shape, np.int16)
    label[4:12, 4:12] = 1
    label[6:10, 6:10] = 2
    return nifti(folder / f"{name}_img.nii.gz", image), nifti(folder / f"{name}_seg.nii.gz", label)


def manifest(folder, rows):
    text = "pairs:\n" + "".join(f"  - {{image: {i.name}, label: {lab.name}, subject: s{k}}}\n"
                                 for k, (i, lab) in enumerate(rows))
    (folder / "m.yaml").write_text(text)
    return folder / "m.yaml"


def run_train(capsys, tmp_path, *sets):
    argv = ["train", "--quiet", "--out", str(tmp_path / "run")]
    for s in [*TINY, *sets]:
        argv += ["--set", s]
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def corrupt(folder):
    (folder / "bad_img.nii.gz").write_bytes(b"\x1f\x8b garbage")
    return folder / "bad_img.nii.gz", good_pair(folder, "b")[1]


def nan_image(folder):
    image, label = good_pair(folder, "b")
    nifti(image, np.full((16, 16, 2), np.nan, np.float32))
    return image, label


def shape_mismatch(folder):
    image, _ = good_pair(folder, "b")
    return image, good_pair(folder, "c", shape=(16, 12, 2))[1]


def float_labels(folder):
    image, label = good_pair(folder, "b")
    nifti(label, np.full((16, 16, 2), 0.5, np.float32))
    return image, label


def missing(folder):
    image, _ = good_pair(folder, "b")
    return image, folder / "nowhere.nii.gz"


@pytest.mark.parametrize(("make", "needle"), [
    (corrupt, "bad_img.nii.gz"), (nan_image, "NaN"), (shape_mismatch, "shape"), (float_labels, "non-integer"),
    (missing, "nowhere.nii.gz"),
])
def test_train_refuses_bad_real_data_named_in_a_manifest(tmp_path, capsys, make, needle):
    rows = [good_pair(tmp_path), make(tmp_path)]
    code, err = run_train(capsys, tmp_path, "method=real", f"data.real={manifest(tmp_path, rows)}")
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*.pt"))


@pytest.mark.parametrize(("sets", "needle"), [
    (["optim.lr=-1"], "optim.lr"), (["net.norm=batch"], "net.norm"), (["steps=ten"], "steps"),
    (["data.real=/no/such/manifest.yaml"], "manifest.yaml"), (["data.labels=/no/such/dir"], "/no/such/dir"),
    (["synth_preset=wild"], "synth_preset"), (["data.n_classes=3"], "data.n_classes"),
    (["method=learn2synth", "data.real=null"], "data.real"),
])
def test_train_refuses_bad_settings(tmp_path, capsys, sets, needle):
    code, err = run_train(capsys, tmp_path, *sets)
    assert code == 2 and needle in err and err.count("\n") == 1


def test_empty_label_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_train(capsys, tmp_path, "method=synthseg", f"data.labels={tmp_path / 'empty'}", "data.real=null")
    assert code == 2 and "empty" in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="optim.lrr"):
        main(["train", "--debug", "--out", str(tmp_path / "r"), "--set", "optim.lrr=1"])


def test_evaluate_with_a_corrupt_prediction_writes_no_table(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    _, label = good_pair(tmp_path / "ref", "case")
    (tmp_path / "pred" / label.name).write_bytes(b"\x1f\x8b not a nifti")
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out",
                 str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and label.name in err and not (tmp_path / "out" / "summary.csv").exists()


@pytest.mark.parametrize("argv, named", [
    (["segment", "scan.nii.gz"], "learn2synth segment: error: the following arguments are required: --out"),
    (["bogus"], "learn2synth: error: argument command: invalid choice: 'bogus'"),
    (["segment", "s.nii.gz", "--out", "o", "--threads", "z"], "learn2synth segment: error: argument --threads"),
    (["segment", "s.nii.gz", "--out", "o", "--bogus"], "learn2synth segment: error: unrecognized arguments: --bogus"),
    (["gan", "train", "--bogus"], "learn2synth gan train: error: "),
    (["gan", "sample", "--model", "m", "--labels", "l", "--out", "o", "--bogus"],
     "learn2synth gan sample: error: unrecognized arguments: --bogus")])
def test_usage_errors_are_one_line_naming_the_command_with_exit_code_2(argv, named, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(named) and "--help" in err and "usage:" not in err
