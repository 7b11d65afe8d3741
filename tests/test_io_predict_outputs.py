"""``learn2synth predict`` output names: inputs with the same file name in different folders, collisions caught
before any prediction, GIF inputs."""

import numpy as np
import pytest
from PIL import Image

import learn2synth.inference as inference
from learn2synth.errors import InputError
from learn2synth.inference import load_model, predict_files
from test_inference import predict, save_nifti, tiny_model


@pytest.fixture(scope="module")
def model_2d(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "m2d", (16, 16))


def subjects(root, names=("OAS1_0001_MR1", "OAS1_0002_MR1", "OAS1_0003_MR1")):
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        save_nifti(root / name / "aligned_norm.nii.gz", rng.random((16, 16, 2)).astype(np.float32))
    return root


def test_same_file_names_in_subject_folders_mirror_the_input_tree(tmp_path, capsys, model_2d):
    root = subjects(tmp_path / "OASIS")
    code, out, err = predict(capsys, "--model", model_2d, "--in", f"{root}/*/aligned_norm.nii.gz",
                             "--out", tmp_path / "seg", "--posteriors")
    assert code == 0, err
    assert "segmented 3 file(s)" in out
    written = sorted(str(p.relative_to(tmp_path / "seg")) for p in (tmp_path / "seg").rglob("*.nii.gz"))
    assert written == [f"OAS1_000{k}_MR1/aligned_norm{s}.nii.gz" for k in (1, 2, 3) for s in ("", "_posteriors")]


def test_distinct_file_names_from_several_folders_stay_flat(tmp_path, capsys, model_2d):
    rng = np.random.default_rng(1)
    for folder, name in (("x", "a"), ("y", "b")):
        (tmp_path / "in" / folder).mkdir(parents=True)
        save_nifti(tmp_path / "in" / folder / f"{name}.nii.gz", rng.random((16, 16, 1)).astype(np.float32))
    code, _, err = predict(capsys, "--model", model_2d, "--in", f"{tmp_path}/in/*/*.nii.gz", "--out", tmp_path / "seg")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["a.nii.gz", "b.nii.gz"]


def test_outputs_that_would_collide_are_refused_before_any_prediction(tmp_path, capsys, model_2d, monkeypatch):
    (tmp_path / "in").mkdir()
    image = np.random.default_rng(2).integers(0, 256, (16, 16)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "in" / "a.png")
    Image.fromarray(image).save(tmp_path / "in" / "a.gif")  # a GIF's label map is written as PNG: a.png twice

    def no_work(*args, **kwargs):
        raise AssertionError("predicted although an output name collides")

    monkeypatch.setattr(inference, "predict_volume", no_work)
    with pytest.raises(InputError) as error:
        predict_files(load_model(model_2d), tmp_path / "in", tmp_path / "seg", progress=False)
    assert str(error.value) == (f"{tmp_path / 'seg' / 'a.png'}: inputs {tmp_path / 'in' / 'a.gif'} and "
                                f"{tmp_path / 'in' / 'a.png'} would both be written here; rename one or segment "
                                "them into separate --out folders")
    assert not (tmp_path / "seg").exists()
    code, out, err = predict(capsys, "--model", model_2d, "--in", tmp_path / "in", "--out", tmp_path / "seg")
    assert code == 2 and err.count("\n") == 1 and "a.png" in err and "Traceback" not in err


def test_a_gif_input_is_segmented_into_a_png(tmp_path, capsys, model_2d):
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (16, 16)).astype(np.uint8)).save(tmp_path / "21.gif")
    code, _, err = predict(capsys, "--model", model_2d, "--in", tmp_path / "21.gif", "--out", tmp_path / "seg")
    assert code == 0, err
    assert [p.name for p in (tmp_path / "seg").iterdir()] == ["21.png"]
