"""Why ``segment`` averages three views: volume Dice of each shipped view model alone and of every combination.

On one OASIS subject (default 0001, the development subject the views were chosen on; 0002 is left to
``segment.py``) in one contrast (default T1; others from ``experiments/contrasts.py``), each model segments the
scan once and mirrored left-right (``learn2synth.inference.predict_volume``); the class probabilities of every
subset of models are averaged (plain mean) and scored with Dice per class over the whole volume. Writes
``benchmarks/results/segment_views.md``.

    .venv/bin/python benchmarks/segment_views.py [--subject OASIS_OAS1_0001_MR1] [--contrast t1] [--model M ...]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "experiments")]  # segment.py beside this file; common, contrasts
import common  # noqa: E402
import contrasts  # noqa: E402

from brain_model import VIEWS  # noqa: E402
from segment import CLASSES, SUBJECTS  # noqa: E402

VIEW_NAMES = {axis: view for view, (axis, _) in VIEWS.items()}  # slice axis of the LIA space -> view


def run(args) -> tuple[list[str], list[tuple[str, bool, dict]]]:
    import nibabel as nib
    import torch

    from learn2synth.evaluate import score_volumes
    from learn2synth.inference import load_model, predict_volume
    from learn2synth.io import Volume
    from learn2synth.segment import shipped_model_paths

    torch.set_num_threads(args.threads)
    folder = Path(args.data) / "brain" / "oasis" / args.subject
    scan = nib.load(folder / "aligned_norm.nii.gz")
    seg4 = np.asarray(nib.load(folder / "aligned_seg4.nii.gz").dataobj)
    image = contrasts.make_contrast(np.asarray(scan.dataobj, dtype=np.float32), seg4, args.contrast,
                                    seed=SUBJECTS.index(args.subject) if args.subject in SUBJECTS else 0)
    volume = Volume(image, affine=scan.affine, format="nifti", path=folder / "aligned_norm.nii.gz")
    models = [load_model(path, "cpu") for path in (args.model or shipped_model_paths())]
    names = [f"{VIEW_NAMES.get(m.slice_axis, m.slice_axis)} ({m.path.name})" for m in models]
    probs = {(i, mirror): predict_volume(m, volume, mirror=mirror)[1]
             for i, m in enumerate(models) for mirror in (False, True)}
    rows = []
    for r in range(1, len(models) + 1):
        for subset in itertools.combinations(range(len(models)), r):
            for mirror in (False, True):
                mean = sum(probs[(i, mirror)] for i in subset) / len(subset)
                scores = score_volumes(mean.argmax(-1), seg4, list(CLASSES))
                rows.append((" + ".join(names[i].split(" ")[0] for i in subset), mirror, scores))
                print(f"{rows[-1][0]} {'mirrored' if mirror else 'once'}: {scores['mean']['dice']:.4f}",
                      file=sys.stderr)
    return names, rows


def report(names: list[str], rows: list, args, command: str) -> str:
    lines = common.report_head("segment: each view model alone and every average of them", False, command)
    lines += [f"Subject `{args.subject}`, contrast `{args.contrast}`; models: " + ", ".join(names) + ". Volume Dice "
              "per class against `aligned_seg4`; 'mirrored': each model's probabilities averaged with those of the "
              "scan mirrored left-right (a sagittal model gives the same either way), as `segment` does by default.",
              "", "| models averaged | mirrored | " + " | ".join(CLASSES.values()) + " | mean |",
              "|---|---|" + "---|" * (len(CLASSES) + 1)]
    for subset, mirror, scores in rows:
        per = " | ".join(f"{scores[k]['dice']:.3f}" for k in CLASSES)
        lines.append(f"| {subset} | {'yes' if mirror else 'no'} | {per} | **{scores['mean']['dice']:.4f}** |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--subject", default=SUBJECTS[0])
    parser.add_argument("--contrast", default="t1", choices=["t1", *contrasts.TARGETS])
    parser.add_argument("--model", action="append", help="checkpoint, repeatable (default: the shipped views)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "segment_views.md"))
    args = parser.parse_args(argv)
    if not (Path(args.data) / "brain" / "oasis" / args.subject).is_dir():
        parser.error(f"{Path(args.data) / 'brain' / 'oasis' / args.subject}: no such subject folder")
    names, rows = run(args)
    text = report(names, rows, args, common.command_line(__file__, argv))
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
