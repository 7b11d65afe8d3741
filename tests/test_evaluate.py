"""Dice, HD95, ASSD against hand-computed cases (anisotropic spacing, empty structures); ``learn2synth evaluate``."""

import csv
import doctest
import math

import nibabel as nib
import numpy as np
import pytest
import torch

from learn2synth.cli import main
from learn2synth.metrics import dice_score, label_metrics, paired_comparison, summarize, surface_distances

NAN, INF = float("nan"), float("inf")


def test_dice_by_hand():
    pred, ref = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    pred[0:3, 0:4] = True  # 12 voxels
    ref[1:4, 0:4] = True  # 12 voxels, 8 shared
    assert dice_score(pred, ref) == pytest.approx(2 * 8 / 24)
    assert dice_score(pred, pred) == 1.0


@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("k", [1, 3])
def test_parallel_planes_k_voxels_apart_along_an_axis_of_spacing_2_5_are_2_5k_apart(axis, k):
    pred, ref = np.zeros((8, 9, 10), bool), np.zeros((8, 9, 10), bool)
    index = [slice(None)] * 3
    index[axis] = 2
    pred[tuple(index)] = True
    index[axis] = 2 + k
    ref[tuple(index)] = True
    spacing = [1.0, 0.7, 1.3]
    spacing[axis] = 2.5
    hd95, assd = surface_distances(pred, ref, spacing)
    assert hd95 == pytest.approx(2.5 * k) and assd == pytest.approx(2.5 * k)
    assert surface_distances(pred, ref)[0] == pytest.approx(k)  # no spacing: voxels


def test_lines_of_different_lengths_with_anisotropic_spacing():
    """pred: row 0, columns 0-9; ref: row 2, columns 0-4; rows 2.5 apart, columns 1.0 apart.

    pred -> ref: 5 voxels at 5.0 and 5 at sqrt(5^2 + j^2), j = 1..5; ref -> pred: 5 voxels at 5.0.
    HD95 = max of the directed 95th percentiles (linear interpolation, MONAI's torch.quantile): position
    0.95 * 9 = 8.55 in the 10 sorted pred -> ref distances; ASSD = mean of all 15 distances.
    """
    pred, ref = np.zeros((5, 12), bool), np.zeros((5, 12), bool)
    pred[0, :10] = True
    ref[2, :5] = True
    far = [math.sqrt(25 + j * j) for j in range(1, 6)]
    hd95 = far[3] + 0.55 * (far[4] - far[3])
    assd = (10 * 5.0 + sum(far)) / 15
    assert surface_distances(pred, ref, (2.5, 1.0)) == pytest.approx((hd95, assd), rel=1e-6)
    assert surface_distances(ref, pred, (2.5, 1.0)) == pytest.approx((hd95, assd), rel=1e-6)  # symmetric


def test_solid_squares_surface_is_the_boundary_ring():
    """Squares rows 2-6 x columns 2-6 (pred) and columns 3-7 (ref), columns 2.0 apart: surfaces are the 16-voxel
    rings. pred -> ref: 8 voxels of rows 2 and 6 (columns 3-6) lie on ref's ring (0); (2,2), (6,2) and column 2's
    rows 3-5 are one column from ref's column 3 (5 x 2.0); column 6's rows 3 and 5 are one row from ref's rows
    2 and 6 (2 x 1.0), row 4 one column from (4,7) (2.0). ref -> pred mirrors it."""
    pred, ref = np.zeros((9, 9), bool), np.zeros((9, 9), bool)
    pred[2:7, 2:7] = True
    ref[2:7, 3:8] = True
    hd95, assd = surface_distances(pred, ref, (1.0, 2.0))
    one_way = [0.0] * 8 + [2.0] * 5 + [1.0] * 2 + [2.0]
    assert assd == pytest.approx(2 * sum(one_way) / 32)  # 0.875
    assert hd95 == pytest.approx(2.0)  # 95th percentile: position 14.25 of 16 sorted values, all 2.0 from 10 on


def test_empty_structure_conventions():
    empty, some = np.zeros((4, 4), bool), np.eye(4, dtype=bool)
    assert all(math.isnan(v) for v in (dice_score(empty, empty), *surface_distances(empty, empty)))
    for pred, ref in [(empty, some), (some, empty)]:
        assert dice_score(pred, ref) == 0.0
        assert surface_distances(pred, ref) == (INF, INF)
    metrics = label_metrics(np.array([[1, 0], [0, 0]]), np.array([[1, 0], [0, 2]]), [1, 2, 3], spacing=(1, 1))
    assert metrics[1] == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    assert metrics[2] == {"dice": 0.0, "hd95": INF, "assd": INF}
    assert all(math.isnan(v) for v in metrics[3].values())
    assert summarize([1.0, NAN, INF, 3.0]) == {"n": 2, "n_inf": 1, "mean": 2.0, "sd": math.sqrt(2), "median": 2.0}


def test_paired_statistics_by_hand():
    a, b = [0.5, 0.6, 0.7, 0.8, NAN], [0.6, 0.8, 0.8, 1.0, 0.9]  # the NaN pair is left out
    r = paired_comparison(a, b)
    diffs = [0.1, 0.2, 0.1, 0.2]
    sd = math.sqrt(sum((d - 0.15) ** 2 for d in diffs) / 3)
    assert r["n"] == 4 and r["mean_diff"] == pytest.approx(0.15) and r["cohen_d"] == pytest.approx(0.15 / sd)
    assert r["p_value"] == pytest.approx(2 / 16)  # exact: all 4 signs positive, two-sided
    assert r["wilcoxon"] == 0.0
    same = paired_comparison([1.0, 2.0], [1.0, 2.0])
    assert math.isnan(same["cohen_d"]) and math.isnan(same["p_value"])
    assert paired_comparison([1.0, 2.0], [2.0, 3.0])["cohen_d"] == INF


def save(path, array, spacing=(1.0, 1.0, 1.0)):
    nib.save(nib.Nifti1Image(np.asarray(array, np.int16), np.diag([*spacing, 1.0])), path)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_reads_spacing_from_the_files_and_writes_tables(tmp_path, capsys):
    for name in ("pred", "ref"):
        (tmp_path / name).mkdir()
    for case, k in [("c1", 1), ("c2", 2), ("c3", 3)]:
        pred, ref = np.zeros((8, 6, 6)), np.zeros((8, 6, 6))
        pred[2] = 1
        ref[2 + k] = 1
        ref[0, 0, 0] = 2 if case != "c3" else 0  # label 2: predicted nowhere, absent from c3's reference
        save(tmp_path / "pred" / f"{case}.nii.gz", pred, spacing=(2.5, 1.0, 1.0))
        save(tmp_path / "ref" / f"{case}.nii.gz", ref, spacing=(2.5, 1.0, 1.0))
    save(tmp_path / "pred" / "c1_posteriors.nii.gz", np.zeros((8, 6, 6, 2)))  # skipped by name
    code = main(["evaluate", "--quiet", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "metrics")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "| method | label | metric | n | n_inf | mean | sd | median |" in out
    cases = read_csv(tmp_path / "metrics" / "metrics_per_case.csv")
    hd = {r["case"]: float(r["hd95"]) for r in cases if r["label"] == "1"}
    assert hd == pytest.approx({"c1": 2.5, "c2": 5.0, "c3": 7.5})
    label2 = {r["case"]: (r["dice"], r["hd95"]) for r in cases if r["label"] == "2"}
    assert label2 == {"c1": ("0", "inf"), "c2": ("0", "inf"), "c3": ("nan", "nan")}
    summary = {(r["label"], r["metric"]): r for r in read_csv(tmp_path / "metrics" / "summary.csv")}
    assert float(summary["1", "hd95"]["mean"]) == pytest.approx(5.0)
    assert float(summary["1", "hd95"]["sd"]) == pytest.approx(2.5)
    assert summary["2", "dice"]["n"] == "2" and summary["2", "hd95"]["n_inf"] == "2"
    assert (tmp_path / "metrics" / "summary.md").read_text().startswith("| method |")
    # nothing is overwritten
    code = main(["evaluate", "--quiet", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--labels", "1", "--out", str(tmp_path / "metrics")])
    assert code == 2 and "refusing to overwrite" in capsys.readouterr().err


def test_compare_two_prediction_folders(tmp_path, capsys):
    for name in ("a", "b", "ref"):
        (tmp_path / name).mkdir()
    for i in range(5):
        ref = np.zeros((12, 12), np.int16)
        ref[3:9, 3:9] = 1
        worse, better = ref.copy(), ref.copy()
        worse[3:9, 3 + 1 + i % 2: 9] = 0  # loses 1 or 2 columns
        better[3, 3:5 + i] = 0  # loses 2..6 voxels of one row
        for folder, array in (("a", worse), ("b", better), ("ref", ref)):
            save(tmp_path / folder / f"case{i}.nii.gz", array[:, :, None], spacing=(1.0, 1.0, 3.0))
    (tmp_path / "b" / "extra.nii.gz").write_bytes(b"")  # no partner: a warning, not an error
    code = main(["evaluate", "--quiet", "--compare", str(tmp_path / "a"), str(tmp_path / "b"),
                 "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "cmp")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "without a partner" in err and "extra" in err
    rows = {r["metric"]: r for r in read_csv(tmp_path / "cmp" / "comparison.csv")}
    assert rows["dice"]["n"] == "5" and float(rows["dice"]["mean_diff"]) > 0 and float(rows["dice"]["cohen_d"]) > 0
    assert float(rows["dice"]["p_value"]) == pytest.approx(2 / 32)  # exact, 5 positive differences
    names = sorted(p.name for p in (tmp_path / "cmp").iterdir())
    assert names == ["boxplot_assd.png", "boxplot_dice.png", "boxplot_hd95.png", "comparison.csv", "comparison.md",
                     "metrics_per_case.csv", "summary.csv", "summary.md"]
    assert (tmp_path / "cmp" / "boxplot_dice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Wilcoxon" in out


def test_bad_reference_is_named_and_nothing_written(tmp_path, capsys):
    for name in ("pred", "ref"):
        (tmp_path / name).mkdir()
    save(tmp_path / "pred" / "a.nii.gz", np.ones((4, 4, 4)))
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 1.5, np.float32), np.eye(4)), tmp_path / "ref" / "a.nii.gz")
    code = main(["evaluate", "--quiet", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and "a.nii.gz: label map has non-integer values" in err
    assert not (tmp_path / "m").exists()


def test_predict_then_evaluate(tmp_path, capsys):
    from learn2synth.train import train
    from learn2synth.train_config import load_train_config

    sets = ["method=synthseg", "steps=2", "net.channels=[4,8]", "threads=1", "data.phantom_count=2",
            "data.real=null", "batch_size=1", "checkpoint_every=2", "data.n_classes=4", "data.shape=[16,16]"]
    train(load_train_config(None, sets), tmp_path / "model", progress=False, tensorboard=False)
    rng = np.random.default_rng(0)
    for name in ("images", "labels"):
        (tmp_path / name).mkdir()
    for i in range(2):
        nib.save(nib.Nifti1Image(rng.random((16, 20, 3)).astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])),
                 tmp_path / "images" / f"s{i}.nii.gz")
        save(tmp_path / "labels" / f"s{i}.nii.gz", rng.integers(0, 4, (16, 20, 3)), spacing=(1.0, 1.0, 2.0))
    assert main(["predict", "--quiet", "--model", str(tmp_path / "model"), "--in", str(tmp_path / "images"),
                 "--out", str(tmp_path / "seg")]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--quiet", "--pred", str(tmp_path / "seg"), "--ref", str(tmp_path / "labels")]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| method | label | metric |") and len(table) == 2 + 3 * 3  # 3 labels x 3 metrics


@pytest.mark.parametrize("module", ["learn2synth.metrics", "learn2synth.evaluate", "learn2synth.inference"])
def test_docstring_examples(module):
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("shape,spacing", [((40, 33), (2.5, 0.7)), ((20, 24, 18), (1.0, 1.3, 3.0)),
                                           ((20, 24, 18), None)])
def test_surface_distances_equal_monais_two_functions(shape, spacing):
    """One edge/distance pass gives what compute_hausdorff_distance(percentile=95) and
    compute_average_surface_distance(symmetric=True) give with two."""
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    for _ in range(3):
        pred = gaussian_filter(rng.normal(size=shape), 2) > 0.05
        ref = gaussian_filter(rng.normal(size=shape), 2) > 0.0
        p, r = torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None]
        hd95 = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=spacing))
        assd = float(compute_average_surface_distance(p, r, include_background=True, symmetric=True,
                                                      spacing=spacing))
        assert surface_distances(pred, ref, spacing) == pytest.approx((hd95, assd), rel=1e-5)
