"""Dice, HD95, ASSD against hand-computed cases (anisotropic spacing, empty structures); ``learn2synth evaluate``."""

import csv
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
    assert float(summary["mean", "hd95"]["mean"]) == 7.5 and summary["mean", "hd95"]["n_inf"] == "2"  # c3 only
    assert summary["mean", "hd95"]["sd"] == ""  # one finite value: no sd
    assert (tmp_path / "metrics" / "summary.md").read_text().startswith("Per volume, over 3 case(s)")
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
    assert table[2].startswith("| method | label | metric |") and len(table) == 4 + 4 * 3  # 3 labels + mean, x 3


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


# --- Volumes vs slices, masks, label sets, comparisons (hand-worked) -------------------------------------------


def hand_worked_volume():
    """Shape (4, 3, 3), slices along axis 0.

    label 1: slice 0: ref 9 voxels, pred the same 9 -> Dice 1; slice 1: ref 9, pred one row of 3 inside -> 2*3/12
    = 0.5; slice 2: ref none, pred 1 voxel -> a false-positive slice; slice 3: neither.
    Volume Dice of label 1: 2 * (9 + 3) / (13 + 18) = 24/31, not the per-slice mean (1 + 0.5) / 2 = 0.75, and not
    (1 + 0.5 + 0) / 3 = 0.5 either (which scoring the false-positive slice as 0 would give).
    label 2 (slice 3 only): ref 2 voxels, pred 1 of them -> 2/3 in the slice and in the volume.
    """
    ref, pred = np.zeros((4, 3, 3), np.int16), np.zeros((4, 3, 3), np.int16)
    ref[0:2] = 1
    pred[0] = 1
    pred[1, 0] = 1
    pred[2, 1, 1] = 1
    ref[3, 0, 0:2] = 2
    pred[3, 0, 0] = 2
    return pred, ref


def test_volume_dice_and_per_slice_dice_by_hand():
    from learn2synth.evaluate import per_slice_scores, score_volumes

    pred, ref = hand_worked_volume()
    scores = score_volumes(pred, ref, [1, 2])
    assert scores[1] == {"dice": pytest.approx(24 / 31)} and scores[2] == {"dice": pytest.approx(2 / 3)}
    assert scores["mean"]["dice"] == pytest.approx((24 / 31 + 2 / 3) / 2)
    with_distances = score_volumes(pred, ref, [1, 2], spacing=(2.0, 1.0, 1.0), distances=True)
    # label 2: pred (3,0,0) -> ref 0; ref (3,0,0), (3,0,1) -> pred 0 and 1: HD95 interpolates 0.95 of the way
    assert with_distances[2] == pytest.approx({"dice": 2 / 3, "hd95": 0.95, "assd": 1 / 3})
    s = per_slice_scores(pred, ref, [1, 2], axis=0)
    assert list(s[1]["slices"]) == [0, 1] and s[1]["dice"] == pytest.approx([1.0, 0.5])
    assert list(s[1]["fp_slices"]) == [2] and s[1]["dice"].mean() == pytest.approx(0.75)
    assert list(s[2]["slices"]) == [3] and s[2]["dice"] == pytest.approx([2 / 3]) and len(s[2]["fp_slices"]) == 0
    # mean over the labels the reference holds in each slice; slice 2 holds none and only the prediction has one
    assert list(s["mean"]["slices"]) == [0, 1, 3] and s["mean"]["dice"] == pytest.approx([1.0, 0.5, 2 / 3])
    assert list(s["mean"]["fp_slices"]) == [2]
    # along another axis the same volumes give other slices: axis 2, label 1: columns 0, 1, 2
    col = per_slice_scores(pred, ref, [1], axis=2)[1]
    assert list(col["slices"]) == [0, 1, 2] and len(col["fp_slices"]) == 0
    # column c: ref 2 slices x 3 rows = 6; pred 3 (slice 0) + 1 (slice 1, row 0), + 1 in column 1 (slice 2); 4 shared
    assert col["dice"] == pytest.approx([8 / 10, 8 / 11, 8 / 10])


def test_evaluate_cli_scores_whole_volumes_and_per_slice(tmp_path, capsys):
    pred, ref = hand_worked_volume()
    for name, array in (("pred", pred), ("ref", ref)):
        (tmp_path / name).mkdir()
        save(tmp_path / name / "v.nii.gz", array)
    code = main(["evaluate", "--quiet", "--no-distances", "--per-slice", "0", "--pred", str(tmp_path / "pred"),
                 "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "m")])
    out, err = capsys.readouterr()
    assert code == 0, err
    cases = {r["label"]: r for r in read_csv(tmp_path / "m" / "metrics_per_case.csv")}
    assert list(cases["1"]) == ["method", "case", "label", "dice"]  # --no-distances: no HD95/ASSD columns
    assert float(cases["1"]["dice"]) == pytest.approx(24 / 31, abs=1e-6)  # one volume, not a mean of slices
    assert float(cases["mean"]["dice"]) == pytest.approx((24 / 31 + 2 / 3) / 2, abs=1e-6)
    summary = {r["label"]: r for r in read_csv(tmp_path / "m" / "per_slice_summary.csv")}
    assert summary["1"]["n"] == "2" and float(summary["1"]["mean"]) == pytest.approx(0.75)
    assert summary["1"]["fp_slices"] == "1" and summary["2"]["fp_slices"] == "0"
    assert summary["mean"]["n"] == "3" and float(summary["mean"]["mean"]) == pytest.approx((1 + 0.5 + 2 / 3) / 3)
    rows = [(r["label"], r["slice"], r["in_reference"]) for r in read_csv(tmp_path / "m" / "per_slice.csv")]
    assert rows == [("1", "0", "1"), ("1", "1", "1"), ("1", "2", "0"), ("2", "3", "1"),
                    ("mean", "0", "1"), ("mean", "1", "1"), ("mean", "2", "0"), ("mean", "3", "1")]
    assert "Per slice along axis 0" in out and "| 1 | dice | 2 | 0.75 | 0.3536 | 0.75 | 1 |" in out


def test_a_single_case_has_no_sd(tmp_path, capsys):
    pred, ref = hand_worked_volume()
    for name, array in (("pred", pred), ("ref", ref)):
        (tmp_path / name).mkdir()
        save(tmp_path / name / "v.nii.gz", array)
    assert main(["evaluate", "--quiet", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]) == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| pred |")]
    assert len(rows) == 3 * 3 and all(row[6] == "-" for row in rows)  # sd column: '-' for every label and metric
    assert "nan" not in out


def write_masked_case(tmp_path):
    """ref: label 1 in columns 0-1 of every row; pred: label 1 everywhere. Inside the mask (columns 0-1) they
    agree; over the whole volume Dice = 2 * 16 / (32 + 16) = 2/3."""
    ref = np.zeros((2, 4, 4), np.int16)
    ref[:, :, :2] = 1
    pred = np.ones_like(ref)
    mask = np.zeros_like(ref)
    mask[:, :, :2] = 1
    for name in ("pred", "ref", "masks"):
        (tmp_path / name).mkdir()
    save(tmp_path / "pred" / "c.nii.gz", pred)
    save(tmp_path / "ref" / "c.nii.gz", ref)
    save(tmp_path / "masks" / "c.nii.gz", mask)
    return pred, ref, mask


@pytest.mark.parametrize("mask_arg", ["folder", "file"])
def test_mask_restricts_scoring(tmp_path, capsys, mask_arg):
    from learn2synth.evaluate import score_volumes

    pred, ref, mask = write_masked_case(tmp_path)
    assert score_volumes(pred, ref, [1])[1]["dice"] == pytest.approx(2 / 3)
    assert score_volumes(pred, ref, [1], mask=mask)[1]["dice"] == 1.0
    mask_path = tmp_path / "masks" if mask_arg == "folder" else tmp_path / "masks" / "c.nii.gz"
    assert main(["evaluate", "--quiet", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--mask", str(mask_path), "--out", str(tmp_path / "m")]) == 0
    row = read_csv(tmp_path / "m" / "metrics_per_case.csv")[0]
    assert (row["label"], float(row["dice"]), float(row["hd95"]), float(row["assd"])) == ("1", 1.0, 0.0, 0.0)
    assert main(["evaluate", "--quiet", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "unmasked")]) == 0
    assert float(read_csv(tmp_path / "unmasked" / "metrics_per_case.csv")[0]["dice"]) == pytest.approx(2 / 3)


def test_mask_of_another_shape_is_one_line_naming_it(tmp_path, capsys):
    write_masked_case(tmp_path)
    save(tmp_path / "masks" / "c.nii.gz", np.ones((2, 4, 5)))
    code = main(["evaluate", "--quiet", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--mask", str(tmp_path / "masks"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and not (tmp_path / "m").exists()
    assert err[0] == (f"learn2synth evaluate: error: {tmp_path / 'masks' / 'c.nii.gz'}: mask has shape (2, 4, 5) "
                      "but the reference has shape (2, 4, 4)")
    code = main(["evaluate", "--quiet", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--mask", str(tmp_path / "nowhere.nii.gz")])
    assert code == 2 and capsys.readouterr().err.strip().endswith("nowhere.nii.gz: no such file or folder")


def test_per_slice_axis_beyond_the_volume_is_refused(tmp_path, capsys):
    write_masked_case(tmp_path)
    for axis, message in (("3", "--per-slice 3: the label map is 3D (shape (2, 4, 4))"),
                          ("-1", "--per-slice: expected an array axis 0, 1 or 2, got -1")):
        code = main(["evaluate", "--quiet", "--per-slice", axis, "--pred", str(tmp_path / "pred"),
                     "--ref", str(tmp_path / "ref")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].endswith(message)


def test_prediction_sharing_no_label_with_the_references_is_refused(tmp_path, capsys):
    ref = np.zeros((3, 4, 4), np.int16)
    ref[:, :2, :2], ref[:, 2:, :2], ref[:, :2, 2:] = 1, 2, 3
    for name in ("pred", "ref"):
        (tmp_path / name).mkdir()
    save(tmp_path / "ref" / "c.nii.gz", ref)
    save(tmp_path / "pred" / "c.nii.gz", np.where(ref > 0, ref + 4, 0))  # values 5, 6, 7
    code = main(["evaluate", "--quiet", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and not (tmp_path / "m").exists()
    assert str(tmp_path / "pred" / "c.nii.gz") in err[0]
    assert "predicted labels {5, 6, 7}, reference labels {1, 2, 3}" in err[0] and "class indices" in err[0]


def test_prediction_with_extra_labels_is_scored_with_a_warning(tmp_path, capsys):
    ref = np.arange(5)[:, None, None] * np.ones((5, 3, 3), np.int16)  # labels 0-4, one per slice
    pred = ref.copy()
    pred[1], pred[4] = 10, 0  # predicted {2, 3, 10}: 10 is no reference label
    for name, array in (("pred", pred), ("ref", ref)):
        (tmp_path / name).mkdir()
        save(tmp_path / name / "c.nii.gz", array)
    assert main(["evaluate", "--quiet", "--no-distances", "--pred", str(tmp_path / "pred"),
                 "--ref", str(tmp_path / "ref")]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "WARNING" in err and "labels {10} appear only in the prediction" in err
    assert "| pred | 2 | dice | 1 | 0 | 1 | - | 1 |" in out and "| pred | 1 | dice | 1 | 0 | 0 | - | 0 |" in out


def write_two_methods(tmp_path, n_cases=5):
    """Per case, volumes (4, 8, 8) with label 1 in rows 0-3 and label 2 in rows 4-7 of slices 0-2 (slice 3
    empty): 32 voxels of each label per slice. A loses k = 1 + case % 3 columns of label 1 in slice 0 (4k voxels);
    B loses one column; A also predicts label 2 in slice 3 (a false-positive slice)."""
    ref = np.zeros((4, 8, 8), np.int16)
    ref[:3, :4], ref[:3, 4:] = 1, 2
    for name in ("a", "b", "ref"):
        (tmp_path / name).mkdir()
    for case in range(n_cases):
        a, b = ref.copy(), ref.copy()
        a[0, :4, : 1 + case % 3] = 0
        a[3, 0, 0] = 2
        b[0, :4, :1] = 0
        for name, array in (("a", a), ("b", b), ("ref", ref)):
            save(tmp_path / name / f"case{case}.nii.gz", array)
    return ref


def test_compare_has_a_mean_over_labels_row_and_says_its_unit(tmp_path, capsys):
    write_two_methods(tmp_path)
    code = main(["evaluate", "--quiet", "--no-distances", "--compare", str(tmp_path / "a"), str(tmp_path / "b"),
                 "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "cmp")])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = {r["label"]: r for r in read_csv(tmp_path / "cmp" / "comparison.csv")}
    assert set(rows) == {"1", "2", "mean"} and rows["mean"]["n"] == "5"
    # label 1 over the volume: 96 voxels; A keeps 96 - 4k, B keeps 92; label 2: B perfect, A has one extra voxel
    dice_a = [2 * (96 - 4 * k) / (192 - 4 * k) for k in (1, 2, 3, 1, 2)]
    mean_a, mean_b = [(d + 2 * 96 / 193) / 2 for d in dice_a], (2 * 92 / 188 + 1) / 2
    assert float(rows["mean"]["mean_a"]) == pytest.approx(np.mean(mean_a), abs=1e-6)
    assert float(rows["mean"]["mean_b"]) == pytest.approx(mean_b, abs=1e-6)
    from scipy.stats import wilcoxon

    diffs = [mean_b - m for m in mean_a]
    assert float(rows["mean"]["p_value"]) == pytest.approx(wilcoxon(diffs).pvalue, rel=1e-4)
    assert "unit: volumes (subjects), n = 5 paired" in out
    assert "cannot reach p < 0.05" in out and "--per-slice" in out
    assert "| mean | dice | 5 |" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_compare_per_slice_tests_over_slices(tmp_path, capsys):
    from scipy.stats import wilcoxon

    write_two_methods(tmp_path, n_cases=3)
    code = main(["evaluate", "--quiet", "--no-distances", "--per-slice", "0", "--compare", str(tmp_path / "a"),
                 str(tmp_path / "b"), "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "cmp")])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = {r["label"]: r for r in read_csv(tmp_path / "cmp" / "comparison.csv")}
    # label 1, slices 0-2 of 3 cases: 9 slices; only slice 0 differs: A 2(32-4k)/(64-4k), B 2*28/60
    a = [2 * (32 - 4 * k) / (64 - 4 * k) if s == 0 else 1.0 for k in (1, 2, 3) for s in range(3)]
    b = [56 / 60 if s == 0 else 1.0 for _ in range(3) for s in range(3)]
    assert rows["1"]["n"] == "9" and float(rows["1"]["mean_diff"]) == pytest.approx(np.mean(b) - np.mean(a), abs=1e-6)
    nonzero = [y - x for x, y in zip(a, b, strict=True) if not np.isclose(x, y)]
    assert float(rows["1"]["p_value"]) == pytest.approx(wilcoxon(nonzero).pvalue, rel=1e-4)
    # label 2: A's stray voxel in slice 3 is a false-positive slice per case, not a tested 0
    assert rows["2"]["n"] == "9" and rows["2"]["fp_slices_a"] == "3" and rows["2"]["fp_slices_b"] == "0"
    assert rows["mean"]["n"] == "9" and rows["mean"]["fp_slices_a"] == "3"
    assert "unit: slices along axis 0 of 3 volume(s)" in out and "cannot reach" not in out


def test_threads_are_set_for_the_command_and_restored(tmp_path, capsys, monkeypatch):
    import learn2synth.evaluate as evaluate

    seen = []
    original = evaluate.evaluate_pairs
    monkeypatch.setattr(evaluate, "evaluate_pairs", lambda *a, **k: seen.append(torch.get_num_threads())
                        or original(*a, **k))
    write_masked_case(tmp_path)
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    assert main(["evaluate", "--quiet", "--threads", str(target), "--pred", str(tmp_path / "pred"),
                 "--ref", str(tmp_path / "ref")]) == 0
    assert seen == [target] and torch.get_num_threads() == before
    assert main(["evaluate", "--threads", "0", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]) == 2
    assert "--threads: expected a positive integer" in capsys.readouterr().err


OASIS = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "brain" / "oasis"


@pytest.mark.skipif(not OASIS.exists(), reason="needs ../shared/data")
def test_dice_only_scoring_of_an_oasis_volume_matches_numpy(tmp_path):
    """A real 160x192x224 seg4 volume against itself shifted by one voxel: the API's Dice per tissue class equals
    a direct numpy count, and the per-slice Dice of each slice equals the same count in that slice."""
    from learn2synth.evaluate import per_slice_scores, score_volumes

    ref = np.asarray(nib.load(sorted(OASIS.glob("*/aligned_seg4.nii.gz"))[0]).dataobj).astype(np.int16)
    pred = np.roll(ref, 1, axis=1)
    scores = score_volumes(pred, ref, [1, 2, 3, 4])
    for label in (1, 2, 3, 4):
        p, r = pred == label, ref == label
        assert scores[label]["dice"] == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()))
    s = per_slice_scores(pred, ref, [1, 2, 3, 4], axis=2)[3]
    for i, d in zip(s["slices"][::20], s["dice"][::20], strict=True):
        p, r = pred[:, :, i] == 3, ref[:, :, i] == 3
        assert d == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()))


def test_one_prediction_file_against_one_reference_file_whatever_their_names(tmp_path, capsys):
    """segment's output and OASIS's aligned_seg4 never share a name: two files are one case. Hand-worked: label 1
    is 4 voxels in the prediction, 2 in the reference, 2 shared -> Dice 2*2/(4+2) = 0.667."""
    pred, ref = np.zeros((4, 4, 4)), np.zeros((4, 4, 4))
    pred[0, 0, :4] = 1
    ref[0, 0, :2] = 1
    save(tmp_path / "seg.nii.gz", pred)
    save(tmp_path / "aligned_seg4.nii.gz", ref)
    code = main(["evaluate", "--quiet", "--no-distances", "--pred", str(tmp_path / "seg.nii.gz"), "--ref",
                 str(tmp_path / "aligned_seg4.nii.gz"), "--out", str(tmp_path / "m")])
    assert code == 0, capsys.readouterr().err
    rows = read_csv(tmp_path / "m" / "metrics_per_case.csv")
    assert sorted(r["label"] for r in rows) == ["1", "mean"] and len({r["case"] for r in rows}) == 1
    assert float(next(r["dice"] for r in rows if r["label"] == "1")) == pytest.approx(2 / 3)
    # the method is named by the prediction's path, not its file name (which two runs' outputs may share)
    assert f"| {tmp_path / 'seg.nii.gz'} | 1 | dice |" in capsys.readouterr().out


def test_existing_outputs_are_refused_before_scoring(tmp_path, capsys, monkeypatch):
    import learn2synth.evaluate as evaluate

    save(tmp_path / "p.nii.gz", np.ones((4, 4, 4)))
    save(tmp_path / "r.nii.gz", np.ones((4, 4, 4)))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "summary.md").write_text("earlier")
    scored = []
    monkeypatch.setattr(evaluate, "evaluate_pairs", lambda *a, **k: scored.append(1))
    code = main(["evaluate", "--quiet", "--pred", str(tmp_path / "p.nii.gz"), "--ref", str(tmp_path / "r.nii.gz"),
                 "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and "summary.md: already exists" in err and len(err.strip().splitlines()) == 1
    assert scored == [] and (tmp_path / "m" / "summary.md").read_text() == "earlier"
