"""The shipped brain tissue models on real brains in T1 and in contrasts they never saw: volume Dice and time.

For each OASIS subject (neither was used in training: the model saw synthetic images from the 20 SynthSeg label
maps only) and each contrast (T1 as scanned; T2-, FLAIR- and PD-like made by ``experiments/contrasts.py``, whose
docstring is the recipe), the scan is written as NIfTI, segmented by ``learn2synth segment`` (timed: reading,
segmenting, writing; the load average is reported with it) and scored against ``aligned_seg4`` with Dice per class
over the whole volume, the papers' protocol; where the errors are: predicted / reference volume per class and the
largest confusions (voxels of one reference class given another label). Writes ``benchmarks/results/segment.md``
(table, targets, command, a figure ``segment.png``); ``--json`` prints one object per test volume.

    .venv/bin/python benchmarks/segment.py [--model RUN_OR_CKPT] [--contrasts t1,t2,flair,pd] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "experiments"))
import common  # noqa: E402
import contrasts  # noqa: E402

CLASSES = {1: "cortex", 2: "subcortical GM", 3: "WM", 4: "CSF"}
SUBJECTS = ("OASIS_OAS1_0001_MR1", "OASIS_OAS1_0002_MR1")
# the targets: T1 per class and mean, other contrasts mean, seconds per volume
T1_TARGETS = {"mean": 0.80, 1: 0.80, 3: 0.88, 2: 0.75, 4: 0.60}
OTHER_TARGET, SECONDS_TARGET = 0.75, 15.0


def segment_one(model, scan: Path, out: Path, threads: int, mirror: bool = True,
                refine: bool = True) -> tuple[np.ndarray, float, float]:
    """Label map of ``scan`` by ``learn2synth segment`` (in this process), its wall time and the load average."""
    from learn2synth.cli import main

    load = os.getloadavg()[0]
    start = time.perf_counter()
    argv = ["segment", str(scan), "--out", str(out), "--threads", str(threads), "--quiet",
            *([] if mirror else ["--no-mirror"]), *([] if refine else ["--no-refine"])]
    code = main(argv + [arg for m in model or [] for arg in ("--model", str(m))])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"segment failed on {scan}")
    import nibabel as nib

    return np.asarray(nib.load(out).dataobj), seconds, load


NAMES = {0: "background", **CLASSES}


def errors(labels: np.ndarray, ref: np.ndarray, top: int = 3) -> dict:
    """Predicted / reference volume per class, and the ``top`` largest confusions as (reference name, predicted
    name, voxels), largest first."""
    n = len(NAMES)
    counts = np.bincount(ref.astype(np.int64).ravel() * n + labels.astype(np.int64).ravel(), minlength=n * n)
    matrix = counts[: n * n].reshape(n, n)
    ratio = {CLASSES[k]: float(matrix[:, k].sum() / matrix[k].sum()) if matrix[k].sum() else float("nan")
             for k in CLASSES}
    off = [(int(matrix[r, c]), NAMES[r], NAMES[c]) for r in range(n) for c in range(n) if r != c and matrix[r, c]]
    return {"volume_ratio": ratio, "confusions": [(r, c, v) for v, r, c in sorted(off, reverse=True)[:top]]}


def run(args) -> list[dict]:
    import nibabel as nib

    from learn2synth.evaluate import score_volumes

    data = Path(args.data) / "brain" / "oasis"
    rows, shown = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for subject in args.subjects:
            scan = nib.load(data / subject / "aligned_norm.nii.gz")
            t1 = np.asarray(scan.dataobj, dtype=np.float32)
            seg4 = np.asarray(nib.load(data / subject / "aligned_seg4.nii.gz").dataobj)
            for contrast in args.contrasts:
                image = contrasts.make_contrast(t1, seg4, contrast, seed=SUBJECTS.index(subject))
                path = Path(tmp) / f"{subject}_{contrast}.nii.gz"
                nib.save(nib.Nifti1Image(image, scan.affine, scan.header), path)
                labels, seconds, load = segment_one(args.model, path, Path(tmp) / f"seg_{path.name}", args.threads,
                                                    args.mirror, args.refine)
                scores = score_volumes(labels, seg4, list(CLASSES))
                row = {"subject": subject, "contrast": contrast, "seconds_per_volume": seconds, "load": load,
                       "dice_per_class": {CLASSES[k]: scores[k]["dice"] for k in CLASSES},
                       "dice_mean": scores["mean"]["dice"], **errors(labels, seg4)}
                rows.append(row)
                shown[(subject, contrast)] = (image, labels, seg4)
                print(f"{subject} {contrast}: Dice mean {row['dice_mean']:.3f} "
                      + " ".join(f"{k} {v:.3f}" for k, v in row["dice_per_class"].items())
                      + f", {seconds:.1f} s (load {load:.1f})", file=sys.stderr)
    figure(shown, Path(args.out).with_suffix(".png"))
    return rows


def meets(row: dict) -> bool:
    if row["contrast"] == "t1":
        per = row["dice_per_class"]
        return row["dice_mean"] >= T1_TARGETS["mean"] and all(per[CLASSES[k]] >= T1_TARGETS[k] for k in CLASSES)
    return row["dice_mean"] >= OTHER_TARGET


def report(rows: list[dict], args, command: str, model_info: str) -> str:
    lines = common.report_head("learn2synth segment: the shipped brain tissue models on unseen brains and contrasts",
                               args.quick, command)
    lines += [model_info, "",
              "Volume Dice per class (whole 3D volume against OASIS `aligned_seg4`; FreeSurfer labels, not manual). "
              + ("Each scan segmented and mirrored left-right, the two averaged (segment's default). " if args.mirror
                 else "Each scan segmented once (`--no-mirror`). ")
              + ("Probabilities refined by each scan's own intensities (segment's default). " if args.refine
                 else "No intensity refinement (`--no-refine`). ")
              + "Time: `learn2synth segment` on one 160x192x224 volume, reading and writing included, "
              f"{args.threads} threads; load = 1-min load average when it started.", "",
              "| subject | contrast | cortex | subcortical GM | WM | CSF | mean | s / volume (load) | target met |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per = r["dice_per_class"]
        dice = " | ".join(f"{per[c]:.3f}" for c in CLASSES.values())
        lines.append(f"| {r['subject'][6:15]} | {r['contrast']} | {dice}"
                     + f" | **{r['dice_mean']:.3f}** | {r['seconds_per_volume']:.1f} ({r['load']:.1f}) | "
                     + ("yes" if meets(r) else "no") + " |")
    lines += ["", f"Targets (issue): T1 mean >= {T1_TARGETS['mean']}, cortex >= {T1_TARGETS[1]}, WM >= "
              f"{T1_TARGETS[3]}, subcortical GM >= {T1_TARGETS[2]}, CSF >= {T1_TARGETS[4]}; other contrasts mean >= "
              f"{OTHER_TARGET}; <= {SECONDS_TARGET:.0f} s per volume. Anchor: SynthSeg (3D, GPU-trained for days) "
              "reports about 0.85 on T1.", "",
              "Where the errors are: predicted / reference volume per class (1 = the right amount), and the three "
              "largest confusions in thousands of voxels (reference -> prediction).", "",
              "| subject | contrast | " + " | ".join(f"{c} vol. ratio" for c in CLASSES.values())
              + " | largest confusions (k voxels) |", "|---|---|" + "---|" * (len(CLASSES) + 1)]
    for r in rows:
        ratios = " | ".join(f"{r['volume_ratio'][c]:.2f}" for c in CLASSES.values())
        worst = "; ".join(f"{a} -> {b} {v / 1000:.0f}" for a, b, v in r["confusions"])
        lines.append(f"| {r['subject'][6:15]} | {r['contrast']} | {ratios} | {worst} |")
    lines += ["", f"![slices]({Path(args.out).with_suffix('.png').name})", ""]
    return "\n".join(lines)


def figure(shown: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subjects = sorted({s for s, _ in shown})
    contrasts_ = [c for c in dict.fromkeys(c for _, c in shown)]
    fig, axes = plt.subplots(len(subjects) * 2, len(contrasts_), figsize=(3 * len(contrasts_), 6.6 * len(subjects)),
                             squeeze=False)
    for i, s in enumerate(subjects):
        for j, c in enumerate(contrasts_):
            image, labels, ref = shown[(s, c)]
            z = image.shape[2] // 2
            axes[2 * i, j].imshow(np.rot90(image[:, :, z]), cmap="gray")
            axes[2 * i, j].set_title(f"{s[6:15]} {c}", fontsize=9)
            axes[2 * i + 1, j].imshow(np.rot90(labels[:, :, z]), vmin=0, vmax=4, cmap="tab10", interpolation="nearest")
            axes[2 * i + 1, j].contour(np.rot90(ref[:, :, z]), levels=[0.5, 1.5, 2.5, 3.5], colors="w", linewidths=0.4)
            axes[2 * i + 1, j].set_title("prediction (white: reference edges)", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def model_description(models) -> str:
    from learn2synth.checkpoint import latest_checkpoint, load_checkpoint
    from learn2synth.segment import shipped_model_paths

    parts = []
    for path in [Path(m) for m in models] if models else shipped_model_paths():
        path = latest_checkpoint(path) if path.is_dir() else path
        ckpt = load_checkpoint(path)
        parts.append(f"`{path.name}` ({ckpt['config']['method']}, slice axis {ckpt['config']['data']['slice_axis']}, "
                     f"{ckpt['step']} training steps)")
    name = "the shipped models" if not models else "models"
    return f"Model: {name} " + ", ".join(parts) + (", probabilities averaged." if len(parts) > 1 else ".")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--model", action="append",
                        help="checkpoint or run folder, repeatable (default: the shipped models, one per view)")
    parser.add_argument("--contrasts", default="t1,t2,flair,pd")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one subject, T1 only")
    parser.add_argument("--json", action="store_true", help="print one JSON object per test volume")
    parser.add_argument("--no-mirror", dest="mirror", action="store_false", help="segment each scan once")
    parser.add_argument("--no-refine", dest="refine", action="store_false",
                        help="keep the networks' probabilities (no per-scan intensity refinement)")
    parser.add_argument("--out", default=str(HERE / "results" / "segment.md"))
    args = parser.parse_args(argv)
    args.contrasts = [c.strip() for c in args.contrasts.split(",")]
    args.subjects = SUBJECTS[1:] if args.quick else SUBJECTS
    if args.quick:
        args.contrasts = args.contrasts[:1]
    if not (Path(args.data) / "brain" / "oasis").is_dir():
        raise SystemExit(f"{args.data}: no brain/oasis folder (the shared data)")
    rows = run(args)
    text = report(rows, args, common.command_line(__file__, argv), model_description(args.model))
    Path(args.out).write_text(text)
    print(text)
    if args.json:
        for r in rows:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
