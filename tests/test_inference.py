"""``learn2synth predict``: 2D and 3D models on volumes, slices and PNGs; geometry kept; bad files reported."""

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from learn2synth.checkpoint import load_checkpoint, save_checkpoint
from learn2synth.cli import main
from learn2synth.errors import InputError
from learn2synth.inference import Ensemble, load_model, load_models, mirror_average, predict_array, predict_volume
from learn2synth.io import load_label_mapping, read_image
from learn2synth.train import train
from learn2synth.train_config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
N_CLASSES = 4
AFFINE = np.array([[0.0, -1.2, 0.0, 10.0], [0.8, 0.0, 0.0, -5.0], [0.0, 0.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0]])


def tiny_model(folder: Path, shape, *more: str) -> Path:
    """A 2-step synthseg model on phantoms (untrained, but a real checkpoint of learn2synth.train)."""
    sets = ["method=synthseg", "steps=2", "net.channels=[4,8]", "threads=1", "data.phantom_count=2", "data.real=null",
            "batch_size=1", "checkpoint_every=2", f"data.n_classes={N_CLASSES}", f"data.spatial_dims={len(shape)}",
            f"data.shape=[{','.join(map(str, shape))}]", *more]
    train(load_train_config(None, sets), folder, progress=False, tensorboard=False)
    return folder / "step_000002.pt"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {2: tiny_model(root / "m2d", (16, 16)), 3: tiny_model(root / "m3d", (16, 16, 16))}


def save_nifti(path, array, affine=AFFINE):
    img = nib.Nifti1Image(array, affine)
    img.header["descrip"] = b"test input"
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)
    return path


def predict(capsys, *argv):
    code = main(["predict", "--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_same_geometry(out_path, in_path):
    out, ref = nib.load(out_path), nib.load(in_path)
    np.testing.assert_array_equal(out.affine, ref.affine)
    np.testing.assert_array_equal(out.header["pixdim"][:4], ref.header["pixdim"][:4])
    for key in ("qform_code", "sform_code", "srow_x", "srow_y", "srow_z", "quatern_b", "descrip", "xyzt_units"):
        np.testing.assert_array_equal(out.header[key], ref.header[key], err_msg=key)


@pytest.mark.parametrize("dims", [2, 3])
def test_nifti_volume_keeps_geometry_and_gives_integer_classes(tmp_path, capsys, models, dims):
    volume = np.random.default_rng(0).random((20, 24, 18)).astype(np.float32)  # not a multiple of 16: windows
    image = save_nifti(tmp_path / "scan.nii.gz", volume)
    code, out, err = predict(capsys, "--model", models[dims], "--in", image, "--out", tmp_path / "seg",
                             "--posteriors", "--batch-size", 3)
    assert code == 0, err
    assert "segmented 1 file" in out
    labels = nib.load(tmp_path / "seg" / "scan.nii.gz")
    assert_same_geometry(tmp_path / "seg" / "scan.nii.gz", image)
    assert labels.get_data_dtype().kind in "iu" and labels.shape == volume.shape
    assert set(np.unique(np.asanyarray(labels.dataobj))) <= set(range(N_CLASSES))
    posteriors = nib.load(tmp_path / "seg" / "scan_posteriors.nii.gz")
    np.testing.assert_array_equal(posteriors.affine, nib.load(image).affine)
    probs = posteriors.get_fdata()
    assert probs.shape == (*volume.shape, N_CLASSES)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(-1), np.asanyarray(labels.dataobj))


def test_2d_model_normalizes_each_slice_on_its_own_along_the_training_axis(models):
    """Min-max normalization per slice: rescaling each slice differently must not change its segmentation,
    and a slice of the volume gets the same posteriors as that slice given alone."""
    model = load_model(models[2], "cpu")
    assert model.slice_axis == 2
    volume = np.random.default_rng(1).random((20, 24, 5)).astype(np.float32)
    scaled = volume * np.array([1, 3, 10, 0.5, 7], np.float32) + np.array([0, 5, -2, 1, 100], np.float32)
    probs = predict_array(model, volume, batch_size=2)
    assert probs.shape == (N_CLASSES, 20, 24, 5)
    np.testing.assert_allclose(predict_array(model, scaled, batch_size=4), probs, atol=1e-5)
    np.testing.assert_allclose(predict_array(model, volume[:, :, 3]), probs[..., 3], atol=1e-5)


def test_png_and_2d_nifti_slice(tmp_path, capsys, models):
    rng = np.random.default_rng(2)
    Image.fromarray((rng.random((30, 26)) * 255).astype(np.uint8)).save(tmp_path / "cells.png")
    image = save_nifti(tmp_path / "slice.nii.gz", rng.random((20, 24, 1)).astype(np.float32))
    for source in (tmp_path / "cells.png", image):
        code, _, err = predict(capsys, "--model", models[2], "--in", source, "--out", tmp_path / "seg",
                               "--posteriors")
        assert code == 0, err
    png = np.array(Image.open(tmp_path / "seg" / "cells.png"))
    assert png.shape == (30, 26) and png.dtype == np.uint8 and set(np.unique(png)) <= set(range(N_CLASSES))
    assert nib.load(tmp_path / "seg" / "cells_posteriors.nii.gz").shape == (30, 26, 1, N_CLASSES)
    assert nib.load(tmp_path / "seg" / "slice.nii.gz").shape == (20, 24, 1)
    assert_same_geometry(tmp_path / "seg" / "slice.nii.gz", image)


def test_folder_with_bad_files_writes_the_good_ones_and_lists_the_bad(tmp_path, capsys, models):
    rng = np.random.default_rng(3)
    src = tmp_path / "in"
    src.mkdir()
    save_nifti(src / "a.nii.gz", rng.random((12, 12, 12)).astype(np.float32))
    nan = rng.random((12, 12, 12)).astype(np.float32)
    nan[0, 0, 0] = np.nan
    save_nifti(src / "b_nan.nii.gz", nan)
    (src / "c_corrupt.mgz").write_bytes(b"not an mgz")
    Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(src / "d_2d.png")  # 3D model, 2D image
    save_nifti(src / "e.nii.gz", rng.random((12, 14, 10)).astype(np.float32))
    code, out, err = predict(capsys, "--model", models[3], "--in", src, "--out", tmp_path / "seg")
    assert code == 2
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["a.nii.gz", "e.nii.gz"]  # no partial file
    lines = err.strip().splitlines()
    assert len(lines) == 3, err
    assert "b_nan.nii.gz: image has NaN values" in lines[0]
    assert "c_corrupt.mgz: cannot read" in lines[1]
    assert "d_2d.png" in lines[2] and "3D" in lines[2]
    assert "segmented 2 file(s)" in out and "3 failed" in out
    before = (tmp_path / "seg" / "a.nii.gz").read_bytes()
    code, _, err = predict(capsys, "--model", models[3], "--in", src / "a.nii.gz", "--out", tmp_path / "seg")
    assert code == 2 and "already exists; refusing to overwrite" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "seg" / "a.nii.gz").read_bytes() == before
    # the whole folder again: one line for the two existing outputs, before any file is segmented
    code, out, err = predict(capsys, "--model", models[3], "--in", src, "--out", tmp_path / "seg")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "and 1 more of the outputs" in err
    assert "segmented" not in out and (tmp_path / "seg" / "a.nii.gz").read_bytes() == before


def test_label_mapping_is_inverted_unless_class_indices_are_asked_for(tmp_path, models):
    ckpt = load_checkpoint(models[2])
    mapping = tmp_path / "map.yaml"
    mapping.write_text("mapping: {0: 0, 10: 1, 11: 1, 20: 2, 30: 3}\ndefault: 0\n")
    config = {**ckpt["config"], "data": {**ckpt["config"]["data"], "label_mapping": str(mapping)}}
    mapped = save_checkpoint(tmp_path / "mapped.pt", config=config, step=2, state=ckpt["state"], rng=ckpt["rng"])
    volume = read_image(save_nifti(tmp_path / "x.nii.gz", np.random.default_rng(4).random((16, 16, 3))))
    classes, _ = predict_volume(load_model(models[2], "cpu"), volume)
    values, _ = predict_volume(load_model(mapped, "cpu"), volume)
    np.testing.assert_array_equal(values, np.array([0, 10, 20, 30])[classes])
    indices, _ = predict_volume(load_model(mapped, "cpu"), volume, class_indices=True)
    np.testing.assert_array_equal(indices, classes)
    mapping.write_text("mapping: {10: 1, 20: 2}\n")  # class 3 has no label value
    with pytest.raises(InputError, match=r"no label value for classes \[3\]"):
        load_model(mapped, "cpu")


def test_checkpoints_that_are_not_ours_or_too_new_are_refused(tmp_path, capsys, models):
    ckpt = load_checkpoint(models[2])
    torch.save({"format": "learn2synth-checkpoint", "version": 99, **{k: ckpt[k] for k in ("config", "step")}},
               tmp_path / "newer.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    newer_config = {**ckpt["config"], "a_future_option": 1}
    save_checkpoint(tmp_path / "future.pt", config=newer_config, step=2, state=ckpt["state"], rng=ckpt["rng"])
    image = save_nifti(tmp_path / "x.nii.gz", np.zeros((8, 8, 8), np.float32))
    for name, problem in [("newer.pt", "newer than this learn2synth"), ("other.pt", "not a learn2synth checkpoint"),
                          ("future.pt", "config does not fit this learn2synth")]:
        code, _, err = predict(capsys, "--model", tmp_path / name, "--in", image, "--out", tmp_path / "seg")
        assert code == 2 and problem in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "seg").exists() or not any((tmp_path / "seg").iterdir())


def test_mirror_needs_a_model_that_knows_its_left_right_axis(tmp_path, capsys, models):
    image = save_nifti(tmp_path / "x.nii.gz", np.ones((8, 8, 8), np.float32))
    code, _, err = predict(capsys, "--model", models[2], "--in", image, "--out", tmp_path / "seg", "--mirror")
    assert code == 2 and "--mirror" in err and "orientation" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "seg").exists()


def test_shipped_label_mappings():
    tissue = load_label_mapping(ROOT / "configs" / "mappings" / "synthseg_to_tissue4.yaml")
    assert tissue.n_classes == 5
    np.testing.assert_array_equal(tissue(np.array([0, 2, 3, 4, 8, 16, 17, 24, 41, 42, 502])),
                                  [0, 3, 1, 4, 2, 3, 2, 0, 3, 1, 0])
    assert tissue.inverse().mapping == {0: 0, 1: 3, 2: 10, 3: 2, 4: 4}
    em = load_label_mapping(ROOT / "configs" / "mappings" / "em_mitochondria.yaml")
    np.testing.assert_array_equal(em(np.array([0, 32, 128, 159, 191, 223, 255])), [0, 0, 0, 0, 1, 0, 0])


@pytest.mark.data
@pytest.mark.skipif(not (SHARED / "brain" / "oasis").exists(), reason="needs ../shared/data")
def test_tissue_mapping_reproduces_oasis_seg4_from_seg35():
    """seg35 labels are FreeSurfer aseg structures in ascending aseg order; mapped, they must give seg4."""
    aseg = [0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 26, 28, 30, 31,
            41, 42, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 58, 60, 62, 63]
    tissue = load_label_mapping(ROOT / "configs" / "mappings" / "synthseg_to_tissue4.yaml")
    subject = SHARED / "brain" / "oasis" / "OASIS_OAS1_0002_MR1"
    seg35 = read_image(subject / "aligned_seg35.nii.gz").array[::2, ::2, ::2].astype(np.int64)
    seg4 = read_image(subject / "aligned_seg4.nii.gz").array[::2, ::2, ::2]
    np.testing.assert_array_equal(tissue(np.array(aseg)[seg35]), seg4)


def test_label_mapping_travels_inside_the_checkpoint(tmp_path):
    labels = np.zeros((24, 24, 3), np.int16)
    labels[4:20, 4:20] = 10
    labels[8:16, 8:16] = 41
    for i in range(2):
        save_nifti(tmp_path / f"seg{i}.nii.gz", labels)
    (tmp_path / "map.yaml").write_text("mapping: {10: 1, 41: 2}\ndefault: 0\n")
    config = load_train_config(None, [
        "method=synthseg", "steps=1", "net.channels=[4,8]", "data.shape=[24,24]", "data.n_classes=3",
        f"data.labels={tmp_path}", f"data.label_mapping={tmp_path / 'map.yaml'}", "data.real=null", "threads=1"])
    train(config, tmp_path / "run", progress=False, tensorboard=False)
    # the synthesis mapping says nothing about the values the user scores against: classes are written as is
    assert load_model(tmp_path / "run").class_values(np.array([0, 1, 2])).tolist() == [0, 1, 2]
    (tmp_path / "real_map.yaml").write_text("mapping: {0: 0, 10: 1, 41: 2}\ndefault: null\n")
    train(replace(config, data=replace(config.data, real_label_mapping=str(tmp_path / "real_map.yaml"))),
          tmp_path / "run2", progress=False, tensorboard=False)
    for name in ("map.yaml", "real_map.yaml"):  # predicting must not need the YAML files any more
        (tmp_path / name).unlink()
    assert load_model(tmp_path / "run2").class_values(np.array([0, 1, 2])).tolist() == [0, 10, 41]


@pytest.mark.slow  # ~40-80 s: surface distances of an untrained model's noisy 3D labels
@pytest.mark.skipif(not (SHARED / "brain" / "oasis").exists(), reason="needs ../shared/data")
def test_brain_model_predicts_an_oasis_volume_in_its_geometry_and_evaluate_scores_it(tmp_path):
    """The issue's end-to-end check: a model trained by a brain config segments an OASIS volume slice by slice;
    the label map keeps the input's affine and shape (it overlays the scan in a viewer) and evaluate scores it."""
    import nibabel as nib

    from learn2synth.cli import main

    subject = SHARED / "brain" / "oasis" / "OASIS_OAS1_0002_MR1"
    sets = ["steps=2", "net.channels=[4,8]", "data.shape=[64,64]", "batch_size=2", "real_batch_size=2",
            "threads=1", "checkpoint_every=2", "val_every=2"]
    assert main(["train", "--config", str(ROOT / "configs" / "oasis_learn2synth.yaml"), "--out", str(tmp_path / "run"),
                 "--quiet", *[a for s in sets for a in ("--set", s)]]) == 0
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "OAS1_0002.nii.gz").symlink_to(subject / "aligned_norm.nii.gz")
    assert main(["predict", "--model", str(tmp_path / "run"), "--in", str(scans), "--out", str(tmp_path / "pred"),
                 "--quiet"]) == 0
    scan, pred = nib.load(subject / "aligned_norm.nii.gz"), nib.load(tmp_path / "pred" / "OAS1_0002.nii.gz")
    assert pred.shape == scan.shape and np.allclose(pred.affine, scan.affine)
    seg4 = np.asarray(nib.load(subject / "aligned_seg4.nii.gz").dataobj)
    assert set(np.unique(np.asarray(pred.dataobj))) <= set(np.unique(seg4))  # the training config's label values
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "OAS1_0002.nii.gz").symlink_to(subject / "aligned_seg4.nii.gz")
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(refs), "--out", str(tmp_path / "metrics"),
                 "--quiet"]) == 0
    summary = (tmp_path / "metrics" / "summary.md").read_text()
    for label in (1, 2, 3, 4):  # the four tissue classes of seg4, each with a Dice row
        assert f"| pred | {label} | dice | 1 |" in summary


def test_empty_and_constant_slices_are_background(models):
    model = load_model(models[2], "cpu")
    volume = np.random.default_rng(0).random((16, 16, 6)).astype(np.float32)
    volume[..., 1] = 0.0  # empty
    volume[..., 4] = 0.7  # constant
    probs = predict_array(model, volume)
    for z in (1, 4):
        assert np.all(probs[0, ..., z] == 1.0) and np.all(probs[1:, ..., z] == 0.0)
    assert not np.all(probs[0, ..., 0] == 1.0)  # slices with content are segmented by the network


def test_only_the_zeros_connected_to_the_border_are_outside_the_support():
    from learn2synth.inference import _background_outside_support

    array = np.zeros((7, 7, 7), np.float32)
    array[1:6, 1:6, 1:6] = 1.0
    array[3, 3, 3] = 0.0  # a zero inside the object: in the support (e.g. a dark ventricle voxel)
    probs = np.full((2, 7, 7, 7), 0.5, np.float32)
    _background_outside_support(probs, array)
    assert probs[0, 0, 0, 0] == 1.0 and probs[1, 0, 0, 0] == 0.0
    assert probs[0, 3, 3, 3] == 0.5 and probs[0, 2, 2, 2] == 0.5


def test_an_ensemble_averages_its_members_each_slicing_along_its_own_axis(tmp_path, capsys, models):
    """Two 2D models of different slice axes (views): the ensemble's probabilities are the mean of the two,
    the second one's are those of its own slices (axis 0) given alone; predict --model A --model B writes them."""
    other = tiny_model(tmp_path / "axis0", (16, 16), "data.slice_axis=0", "seed=5")
    both = load_models([models[2], other], "cpu")
    assert isinstance(both, Ensemble) and both.n_classes == N_CLASSES
    with pytest.raises(AttributeError, match="not shared"):
        both.slice_axis  # noqa: B018 - each member has its own
    first, second = load_model(models[2], "cpu"), load_model(other, "cpu")
    assert second.slice_axis == 0
    volume = np.random.default_rng(3).random((6, 20, 24)).astype(np.float32)
    for axis in range(3):  # the border above the minimum: no voxel is outside the support, whatever the seed
        np.moveaxis(volume, axis, 0)[[0, -1]] = 1.0
    by_hand = (predict_array(first, volume) + predict_array(second, volume)) / 2
    np.testing.assert_allclose(predict_array(both, volume), by_hand, atol=1e-6)
    np.testing.assert_allclose(predict_array(second, volume)[:, 4], predict_array(second, volume[4]), atol=1e-5)
    assert np.abs(predict_array(first, volume) - predict_array(second, volume)).max() > 1e-3  # they differ
    image = save_nifti(tmp_path / "scan.nii.gz", volume)
    code, out, err = predict(capsys, "--model", models[2], "--model", other, "--in", image, "--out",
                             tmp_path / "seg", "--posteriors")
    assert code == 0, err
    written = nib.load(tmp_path / "seg" / "scan_posteriors.nii.gz").get_fdata()
    np.testing.assert_allclose(np.moveaxis(written, -1, 0), by_hand, atol=1e-5)


def test_models_that_segment_differently_cannot_be_averaged(tmp_path, capsys, models):
    five = tiny_model(tmp_path / "five", (16, 16), "data.n_classes=5")
    with pytest.raises(InputError, match="n_classes 5 against 4") as e:
        load_models([models[2], five], "cpu")
    assert str(e.value.path) == str(five)
    code, out, err = predict(capsys, "--model", models[2], "--model", five, "--in", tmp_path, "--out",
                             tmp_path / "seg")
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(five) in err and not (tmp_path / "seg").exists()


def test_one_checkpoint_given_twice_is_refused_whether_as_file_or_run_folder(tmp_path, capsys, models):
    from learn2synth.checkpoint import resolve_checkpoint

    as_file = resolve_checkpoint(models[2])
    for twice in ([models[2], models[2]], [models[2], as_file]):
        with pytest.raises(InputError, match="same checkpoint") as e:
            load_models(twice, "cpu")
        assert str(e.value.path) == str(twice[1])
    code, out, err = predict(capsys, "--model", models[2], "--model", as_file, "--in", tmp_path, "--out",
                             tmp_path / "seg")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "same checkpoint" in err
    assert not (tmp_path / "seg").exists()


def test_mirroring_averages_the_flipped_pass_except_for_slices_along_the_left_right_axis(tmp_path, models,
                                                                                           monkeypatch):
    """LIA: axis 0 runs left-right. A model slicing along axis 2 averages its pass with the flipped volume's
    (flipped back); one slicing along axis 0 (sagittal) gives the same as a single pass, as flipping only
    reorders its slices (checked against running it on the flipped volume)."""
    coronal = replace(load_model(models[2], "cpu"), orientation="LIA")
    sagittal = replace(load_model(tiny_model(tmp_path / "sag", (16, 16), "data.slice_axis=0"), "cpu"),
                       orientation="LIA")
    volume = np.random.default_rng(4).random((6, 20, 24)).astype(np.float32)
    flipped = np.flip(volume, 0).copy()
    by_hand = (predict_array(coronal, volume) + np.flip(predict_array(coronal, flipped), 1)) / 2
    np.testing.assert_allclose(mirror_average(coronal, volume, 4), by_hand, atol=1e-6)
    assert np.abs(by_hand - predict_array(coronal, volume)).max() > 1e-4  # the mirrored pass did change it
    once = predict_array(sagittal, volume)
    np.testing.assert_allclose(np.flip(predict_array(sagittal, flipped), 1), once, atol=1e-6)
    import learn2synth.inference as inference

    calls = []
    real_predict = inference.predict_array
    def counted(m, *args, **kwargs):
        calls.append(m.slice_axis)
        return real_predict(m, *args, **kwargs)

    monkeypatch.setattr(inference, "predict_array", counted)
    np.testing.assert_allclose(mirror_average(sagittal, volume, 4), once, atol=1e-6)
    assert calls == [0]  # one pass: the mirrored one is skipped, not computed and averaged
    calls.clear()
    views = Ensemble([sagittal, coronal])  # the order must not matter: each member decides for itself
    np.testing.assert_allclose(mirror_average(views, volume, 4), (once + by_hand) / 2, atol=1e-6)
    assert sorted(calls) == [0, 2, 2]


def test_without_threads_inference_uses_the_idle_cores_unless_omp_num_threads_is_set(monkeypatch):
    import learn2synth.inference as inference

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(inference.os, "getloadavg", lambda: (3.7, 3.0, 2.0))
        inference.set_threads(None)
        assert torch.get_num_threads() == 1  # both cores busy: one thread, not two fighting over them
        torch.set_num_threads(2)
        monkeypatch.setattr(inference.os, "getloadavg", lambda: (0.3, 0.3, 0.3))
        inference.set_threads(None)
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        monkeypatch.setattr(inference.os, "getloadavg", lambda: (3.7, 3.0, 2.0))
        inference.set_threads(None)
        assert torch.get_num_threads() == 2  # the user's own choice stands
        inference.set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
