"""``learn2synth segment``: any orientation and voxel size, outputs in the input's grid, volumes, bad input."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from learn2synth.cli import main
from learn2synth.segment import class_volumes
from learn2synth.train import train
from learn2synth.train_config import load_train_config

LIA = np.array([[-1.0, 0, 0, 20], [0, 0, 1, -20], [0, -1, 0, 20], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A 2-step 2D model trained on LIA label volumes, recording its space (LIA, 1 mm)."""
    root = tmp_path_factory.mktemp("segment")
    seg = np.zeros((24, 20, 16), np.int16)
    seg[4:20, 4:16, 2:14] = 1
    seg[8:16, 8:12, 4:12] = 2
    (root / "maps").mkdir()
    nib.save(nib.Nifti1Image(seg, LIA), root / "maps" / "m.nii.gz")
    config = load_train_config(None, ["method=synthseg", "steps=2", "net.channels=[4,8]", "threads=1",
                                      "batch_size=1", "data.shape=[16,16]", "data.n_classes=3", "data.real=null",
                                      f"data.labels={root / 'maps'}", "data.orientation=LIA", "data.voxel_size=1.0",
                                      "data.class_names=[background,a,b]"])
    train(config, root / "run", progress=False, tensorboard=False)
    return root / "run"


def _scan(seed=0, shape=(24, 20, 16)):
    rng = np.random.default_rng(seed)
    scan = np.zeros(shape, np.float32)
    scan[3:21, 3:17, 2:14] = rng.random((18, 14, 12)) + 1.0
    return scan


def _segment(capsys, *argv):
    code = main(["segment", "--quiet", *map(str, argv)])
    return code, *capsys.readouterr()


def test_a_reoriented_copy_gets_the_same_labels_in_its_own_grid(tmp_path, model, capsys):
    scan = _scan()
    nib.save(nib.Nifti1Image(scan, LIA), tmp_path / "lia.nii.gz")
    ras = nib.as_closest_canonical(nib.Nifti1Image(scan, LIA))
    nib.save(ras, tmp_path / "ras.nii.gz")
    for name in ("lia", "ras"):
        assert _segment(capsys, tmp_path / f"{name}.nii.gz", "--out", tmp_path / f"{name}_seg.nii.gz",
                        "--model", model)[0] == 0
    lia_seg, ras_seg = (nib.load(tmp_path / f"{n}_seg.nii.gz") for n in ("lia", "ras"))
    np.testing.assert_array_equal(ras_seg.affine, ras.affine)
    back = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(lia_seg.dataobj), LIA))
    np.testing.assert_array_equal(np.asarray(ras_seg.dataobj), np.asarray(back.dataobj))


def test_anisotropic_scan_keeps_its_grid_and_empty_space_is_background(tmp_path, model, capsys):
    scan = _scan()[:, :, ::2]  # 2 mm along the third axis
    affine = LIA.copy()
    affine[:3, 2] *= 2
    nib.save(nib.Nifti1Image(scan, affine), tmp_path / "aniso.nii.gz")
    code, out, err = _segment(capsys, tmp_path / "aniso.nii.gz", "--out", tmp_path / "seg", "--model", model,
                              "--vol", tmp_path / "vol.csv", "--posteriors")
    assert code == 0, err
    seg = nib.load(tmp_path / "seg" / "aniso.nii.gz")
    assert seg.shape == scan.shape and np.allclose(seg.affine, affine)
    labels = np.asarray(seg.dataobj)
    assert not labels[scan == 0].any()  # outside the image support: background
    post = nib.load(tmp_path / "seg" / "aniso_posteriors.nii.gz")
    assert post.shape == (*scan.shape, 3) and np.allclose(np.asarray(post.dataobj).sum(-1), 1, atol=1e-4)
    rows = (tmp_path / "vol.csv").read_text().splitlines()
    assert rows[0] == "scan,a (mm3),b (mm3)"
    expected = [2.0 * int((labels == c).sum()) for c in (1, 2)]  # 1 x 1 x 2 mm voxels
    assert [float(v) for v in rows[1].split(",")[1:]] == expected


def test_mirroring_averages_the_scan_and_its_left_right_mirror_image(tmp_path, model, capsys):
    from learn2synth.inference import load_model, predict_volume
    from learn2synth.io import read_image

    scan = _scan(seed=3)
    nib.save(nib.Nifti1Image(scan, LIA), tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(scan[::-1].copy(), LIA), tmp_path / "flipped.nii.gz")  # LIA: axis 0 is left-right
    for flag, out in (([], "default"), (["--no-mirror"], "once")):
        code, _, err = _segment(capsys, tmp_path / "scan.nii.gz", "--out", tmp_path / out, "--model", model,
                                "--posteriors", "--no-refine", *flag)
        assert code == 0, err
    posteriors = {out: np.asarray(nib.load(tmp_path / out / "scan_posteriors.nii.gz").dataobj)
                  for out in ("default", "once")}
    loaded = load_model(model)
    assert loaded.left_right_axis == 0
    plain = predict_volume(loaded, read_image(tmp_path / "scan.nii.gz"))[1]
    flipped = predict_volume(loaded, read_image(tmp_path / "flipped.nii.gz"))[1][::-1]
    np.testing.assert_allclose(posteriors["once"], plain, atol=1e-6)
    np.testing.assert_allclose(posteriors["default"], (plain + flipped) / 2, atol=1e-6)
    assert np.abs(plain - flipped).max() > 1e-3  # the mirror image is segmented differently: the test can fail


def test_segment_refines_the_probabilities_by_the_scans_intensities_unless_told_not_to(tmp_path, model, capsys):
    import torch

    from learn2synth.inference import load_model, predict_volume
    from learn2synth.io import read_image
    from learn2synth.refine import refine

    scan = _scan(seed=4)
    nib.save(nib.Nifti1Image(scan, LIA), tmp_path / "scan.nii.gz")
    for flag, out in (([], "refined"), (["--no-refine"], "plain")):
        code, _, err = _segment(capsys, tmp_path / "scan.nii.gz", "--out", tmp_path / out, "--model", model,
                                "--posteriors", *flag)
        assert code == 0, err
    posteriors = {out: np.asarray(nib.load(tmp_path / out / "scan_posteriors.nii.gz").dataobj)
                  for out in ("refined", "plain")}
    plain = predict_volume(load_model(model), read_image(tmp_path / "scan.nii.gz"), mirror=True)[1]
    np.testing.assert_allclose(posteriors["plain"], plain, atol=1e-6)
    expected = refine(torch.from_numpy(scan), torch.from_numpy(np.moveaxis(plain, -1, 0).copy())).numpy()
    np.testing.assert_allclose(posteriors["refined"], np.moveaxis(expected, 0, -1), atol=1e-5)
    assert np.abs(posteriors["refined"] - plain).max() > 1e-3  # refining changed them: the test can fail
    labels = np.asarray(nib.load(tmp_path / "refined" / "scan.nii.gz").dataobj)
    np.testing.assert_array_equal(labels, posteriors["refined"].argmax(-1))


def test_class_volumes_hand_worked():
    assert class_volumes(np.array([[[1, 1], [2, 0]]]), np.diag([0.5, 2.0, 3.0, 1.0]), [1, 2]) == pytest.approx([6, 3])


def test_bad_inputs_fail_in_one_line_without_writing(tmp_path, model, capsys):
    nib.save(nib.Nifti1Image(_scan(), LIA), tmp_path / "a.nii.gz")
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 1), np.float32), LIA), tmp_path / "d2" / "slice.nii.gz")
    (tmp_path / "taken.nii.gz").write_bytes(b"x")
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "photo.png")  # 2D: found only once it is read
    cases = [
        ([tmp_path / "photo.png", "--out", tmp_path / "o5"], "not a 3D scan"),
        ([tmp_path / "missing.nii.gz", "--out", tmp_path / "o1"], "missing.nii.gz"),
        ([tmp_path / "a.nii.gz", "--out", tmp_path / "taken.nii.gz"], "already exists"),
        ([tmp_path / "d2", "--out", tmp_path / "o2"], "not a 3D scan"),
        ([tmp_path / "a.nii.gz", "--out", tmp_path / "o3", "--threads", "0"], "--threads"),
        ([tmp_path / "a.nii.gz", "--out", tmp_path / "o4", "--model", tmp_path / "d1"], "no checkpoint"),
    ]
    for argv, problem in cases:
        code, out, err = _segment(capsys, *argv, *([] if "--model" in map(str, argv) else ["--model", model]))
        assert code == 2 and problem in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert out == "", (argv, out)  # one input: the error line alone, no summary of nothing done
    assert (tmp_path / "taken.nii.gz").read_bytes() == b"x"
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()


def test_repeated_file_names_mirror_the_input_tree_and_true_collisions_are_refused(tmp_path, model, capsys):
    """One folder per subject with the same file name (OASIS, BIDS): outputs mirror the folders, like predict.
    Names equal but for case would overwrite each other on macOS: refused before any work."""
    for sub in ("s1", "s2"):
        (tmp_path / sub).mkdir()
        nib.save(nib.Nifti1Image(_scan(), LIA), tmp_path / sub / "scan.nii.gz")
    code, out, err = _segment(capsys, str(tmp_path / "s*" / "scan.nii.gz"), "--out", tmp_path / "seg", "--model",
                              model, "--posteriors", "--vol", tmp_path / "vol.csv")
    assert code == 0, err
    names = [row.split(",")[0] for row in (tmp_path / "vol.csv").read_text().splitlines()[1:]]
    assert names == [str(tmp_path / sub / "scan.nii.gz") for sub in ("s1", "s2")]  # one row per scan, told apart
    for sub in ("s1", "s2"):
        written = nib.load(tmp_path / "seg" / sub / "scan.nii.gz")
        assert written.shape == _scan().shape and np.allclose(written.affine, LIA)
        assert (tmp_path / "seg" / sub / "scan_posteriors.nii.gz").exists()

    (tmp_path / "cases").mkdir()
    for name in ("scan.nii.gz", "SCAN.nii.gz"):
        nib.save(nib.Nifti1Image(_scan(), LIA), tmp_path / "cases" / name)
    if len(list((tmp_path / "cases").iterdir())) == 2:  # a case-sensitive file system holds both
        code, out, err = _segment(capsys, tmp_path / "cases", "--out", tmp_path / "seg2", "--model", model)
        assert code == 2 and "would both be written here" in err and not (tmp_path / "seg2").exists()


def test_the_shipped_model_segments_a_scan_without_model_argument(tmp_path, capsys):
    """No --model: the model inside the package; a small 2 mm RAS scan comes back in its own grid."""
    from learn2synth.inference import load_model
    from learn2synth.segment import shipped_model_paths

    assert sum(path.stat().st_size for path in shipped_model_paths()) < 10e6  # at most 10 MB of weights
    assert [load_model(path, "cpu").slice_axis for path in shipped_model_paths()] == [2, 1, 0]  # three views
    rng = np.random.default_rng(1)
    scan = np.zeros((40, 48, 36), np.float32)
    scan[8:32, 10:38, 8:28] = 0.4 + 0.1 * rng.random((24, 28, 20))
    scan[14:26, 18:30, 12:24] = 0.8
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(scan, affine), tmp_path / "scan.nii.gz")
    code, out, err = _segment(capsys, tmp_path / "scan.nii.gz", "--out", tmp_path / "seg.nii.gz", "--threads", "1")
    assert code == 0, err
    seg = nib.load(tmp_path / "seg.nii.gz")
    assert seg.shape == scan.shape and np.allclose(seg.affine, affine)
    labels = np.asarray(seg.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4} and not labels[scan == 0].any()


def test_a_missing_shipped_view_is_one_line(tmp_path, capsys, monkeypatch):
    import learn2synth.segment

    monkeypatch.setitem(learn2synth.segment.SHIPPED_VIEWS, "sagittal", "gone.pt")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), LIA), tmp_path / "scan.nii.gz")
    code, out, err = _segment(capsys, tmp_path / "scan.nii.gz", "--out", tmp_path / "seg")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "gone.pt" in err and "missing" in err
    assert not (tmp_path / "seg").exists()


def test_a_single_slice_is_refused_before_the_model_loads_with_the_predict_command(tmp_path, capsys):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 1), np.float32), LIA), tmp_path / "slice.nii.gz")
    missing_model = tmp_path / "no_model_here"  # loading it would fail: the scan check must come first
    code, out, err = _segment(capsys, tmp_path / "slice.nii.gz", "--out", tmp_path / "seg", "--model", missing_model)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not a 3D scan" in err and f"learn2synth predict --model {missing_model}" in err
    assert not (tmp_path / "seg").exists()


def test_a_label_map_given_as_the_scan_is_segmented_with_a_warning(tmp_path, model, capsys):
    labels = np.zeros((24, 20, 16), np.int16)
    labels[4:20, 4:16, 2:14] = 3
    labels[8:16, 8:12, 4:12] = 41
    nib.save(nib.Nifti1Image(labels, LIA), tmp_path / "seg4.nii.gz")
    code, _, err = _segment(capsys, tmp_path / "seg4.nii.gz", "--out", tmp_path / "o.nii.gz", "--model", model)
    assert code == 0 and "seg4.nii.gz: looks like a label map (3 distinct integer values)" in err
    code, _, err = _segment(capsys, _saved(tmp_path), "--out", tmp_path / "o2.nii.gz", "--model", model)
    assert code == 0 and "label map" not in err  # a real-valued scan: no warning


def _saved(tmp_path):
    nib.save(nib.Nifti1Image(_scan(), LIA), tmp_path / "scan.nii.gz")
    return tmp_path / "scan.nii.gz"


def test_the_views_benchmark_scores_every_average_of_the_models(tmp_path, capsys):
    """benchmarks/segment_views.py on a fake OASIS subject and two tiny LIA models (slice axes 2 and 0): one row
    per subset and mirroring, and the pair's mirrored row equals Dice computed by hand from predict_volume."""
    import importlib.util

    from learn2synth.inference import load_model, predict_volume
    from learn2synth.io import read_image

    seg4 = np.zeros((24, 20, 16), np.int16)
    seg4[3:21, 3:17, 2:14] = 1
    seg4[6:18, 6:14, 4:12] = 3
    seg4[8:12, 8:12, 5:11] = 2
    seg4[13:16, 8:12, 5:11] = 4
    (tmp_path / "maps").mkdir()
    nib.save(nib.Nifti1Image(seg4, LIA), tmp_path / "maps" / "m.nii.gz")
    models = []
    for axis in (2, 0):
        config = load_train_config(None, ["method=synthseg", "steps=2", "net.channels=[4,8]", "threads=1",
                                          "batch_size=1", "data.shape=[16,16]", "data.n_classes=5",
                                          "data.real=null", f"data.labels={tmp_path / 'maps'}",
                                          "data.orientation=LIA", "data.voxel_size=1.0", f"data.slice_axis={axis}",
                                          f"seed={axis}"])
        train(config, tmp_path / f"run{axis}", progress=False, tensorboard=False)
        models.append(tmp_path / f"run{axis}" / "step_000002.pt")
    subject = tmp_path / "data" / "brain" / "oasis" / "OASIS_OAS1_0001_MR1"
    subject.mkdir(parents=True)
    scan = np.where(seg4 > 0, seg4 * 0.2 + 0.1, 0).astype(np.float32)
    nib.save(nib.Nifti1Image(scan, LIA), subject / "aligned_norm.nii.gz")
    nib.save(nib.Nifti1Image(seg4, LIA), subject / "aligned_seg4.nii.gz")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "segment_views.py"
    spec = importlib.util.spec_from_file_location("segment_views", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "views.md"
    assert bench.main(["--data", str(tmp_path / "data"), "--model", str(models[0]), "--model", str(models[1]),
                       "--threads", "1", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| coronal") or line.startswith("| sag")]
    assert len(rows) == 6  # coronal, sagittal, both; each once and mirrored
    volume = read_image(subject / "aligned_norm.nii.gz")
    probs = sum(predict_volume(load_model(m, "cpu"), volume, mirror=True)[1] for m in models) / 2
    pred = probs.argmax(-1)
    dice = [2 * ((pred == c) & (seg4 == c)).sum() / ((pred == c).sum() + (seg4 == c).sum()) for c in (1, 2, 3, 4)]
    pair = next(r for r in rows if r.startswith("| coronal + sagittal | yes"))
    assert f"**{np.mean(dice):.4f}**" in pair


def test_the_segment_benchmark_counts_volumes_and_confusions_hand_worked():
    """benchmarks/segment.py's error table on a 6-voxel example: reference [0 1 1 3 3 4], prediction
    [1 1 3 3 3 0]: cortex 2 predicted for 2 (ratio 1.0), WM 3 for 2 (1.5), CSF 0 for 1 (0.0), subcortical GM
    absent (nan); confusions, one voxel each: background -> cortex, cortex -> WM, CSF -> background."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "segment.py"
    spec = importlib.util.spec_from_file_location("segment_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    found = bench.errors(np.array([1, 1, 3, 3, 3, 0]), np.array([0, 1, 1, 3, 3, 4]))
    ratio = found["volume_ratio"]
    assert ratio["cortex"] == 1.0 and ratio["WM"] == 1.5 and ratio["CSF"] == 0.0
    assert np.isnan(ratio["subcortical GM"])
    assert sorted(found["confusions"]) == [("CSF", "background", 1), ("background", "cortex", 1),
                                           ("cortex", "WM", 1)]
    two = bench.errors(np.array([1, 1, 0]), np.array([0, 0, 0]), top=1)
    assert two["confusions"] == [("background", "cortex", 2)]


def test_the_command_line_reads_the_shipped_views_without_numpy_or_torch():
    """adapt --view's choices come from segment.SHIPPED_VIEWS while the parser is built: that must not import
    numpy or torch (learn2synth --help stays light)."""
    import subprocess
    import sys

    code = ("import sys; from learn2synth.cli import build_parser; p = build_parser(); "
            "print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_synthetic_fit_benchmark_counts_spill_hand_worked():
    """benchmarks/synth_fit.py on one 1x5 image: target [0 0 1 1 0], prediction [0 1 1 1 1] (cortex one voxel too
    thick on both sides). Class 1: overlap 2, predicted 4, true 2 -> Dice 4/6, volume ratio 2.0; background
    voxels touching it: positions 1 and 4 (position 0 is two away), both called cortex -> spill 1.0. Class 2 is
    absent everywhere: nan."""
    import importlib.util

    import torch

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "synth_fit.py"
    spec = importlib.util.spec_from_file_location("synth_fit", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    target = torch.tensor([0, 0, 1, 1, 0]).reshape(1, 1, 1, 5)
    pred = torch.tensor([0, 1, 1, 1, 1]).reshape(1, 1, 1, 5)
    counts = bench.tally(pred, target, 3)
    assert counts[:, 1].tolist() == [2, 4, 2, 2, 2]
    summary = bench.summarize(counts + bench.tally(target, target, 3))   # plus a perfect image: spill 2 of 4
    assert summary["dice"][0] == pytest.approx(8 / 10) and summary["volume"][0] == pytest.approx(6 / 4)
    assert summary["spill"][0] == pytest.approx(0.5)
    assert all(np.isnan(summary[key][1]) for key in ("dice", "volume", "spill"))
