"""Adapting a trained brain model to a target domain with a few labeled examples: does learned synthesis win?

The setting of the Learn2Synth paper's MPRAGE -> FLASH experiment, made from the shared OASIS data: a target
domain (T1 as scanned, a contrast the model never saw, made by ``contrasts.py`` whose docstring is the recipe,
or ``skull-on``: the raw scan with the skull, one slice per subject), K labeled coronal slices of one subject in
that domain, test on every brain slice of the OTHER subject in the same domain. Every method starts from the same
model (the shipped brain model by default) and trains the same number of extra steps
(``learn2synth.adapt.adapt_config`` builds each config from the model):

- ``start``: the model as it is (no extra step);
- ``synthseg``: synthseg continued, no real data (the baseline every other method is tested against);
- ``l2s-parametric``, ``l2s-priors``, ``l2s-residual``: Learn2Synth with each augmenter (the segmenter never
  sees a real image); ``l2s-best``: the one of the three with the best validation Dice on held-out K examples
  (never the test subject), per seed; ``l2s-priors-exact``: learned priors with the exact hypergradient at every
  step (the estimator the defaults replaced); ``l2s-priors-every``: the default estimator at every step;
- ``l2s-priors-fit``: learned priors whose GMM ranges start from the K examples' per-class intensities
  (``augmenter.fit_real``); ``fit-only``: the same start, never updated (synthesis with priors estimated from the
  K examples, no hypergradient): the ablation that tells what the hypergradient adds;
- ``priors-frozen``: the learned-priors augmenter at its start, never updated (the control for ``l2s-priors``);
- ``mixed``, ``finetune``, ``real``: the K examples train the segmenter.

Scored with Dice per class over the test volume (the papers' protocol) and per slice; Wilcoxon over slices
against ``synthseg`` for each seed. Writes ``benchmarks/results/adapt_<contrast>.md``. Resumable with --work.

    .venv/bin/python benchmarks/experiments/exp_adapt.py --contrast flair --k 5 --seeds 0,1,2 --work /tmp/adapt
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import contrasts  # noqa: E402

CLASSES = ["cortex", "subcort. GM", "WM", "CSF"]
AXIS = 2
SUBJECTS = {"0001": "OASIS_OAS1_0001_MR1", "0002": "OASIS_OAS1_0002_MR1"}
METHODS = {
    "start": None,
    "synthseg": ["method=synthseg", "data.real=null"],
    "l2s-parametric": ["augmenter.kind=parametric"],
    "l2s-priors": ["augmenter.kind=learned_priors"],
    # the same with the exact hypergradient at every step (the default is fd_onesided every 4th step)
    "l2s-priors-exact": ["augmenter.kind=learned_priors", "meta.mode=exact", "meta.meta_every=1"],
    # the default estimator (fd_onesided) at every step instead of every 4th: tells frequency from estimator
    "l2s-priors-every": ["augmenter.kind=learned_priors", "meta.meta_every=1"],
    "l2s-priors-fit": ["augmenter.kind=learned_priors", "augmenter.fit_real=true"],
    "fit-only": ["augmenter.kind=learned_priors", "augmenter.fit_real=true", "meta.warmup=1000000000",
                 "augmenter.check_every=0"],
    # the learned-priors rendering path with the priors never updated: the control that separates what the
    # hypergradient learned from what rendering through the augmenter does by itself
    "priors-frozen": ["augmenter.kind=learned_priors", "meta.warmup=1000000000", "augmenter.check_every=0"],
    "l2s-residual": ["augmenter.kind=residual", "augmenter.lr=0.001", "augmenter.check_every=0"],
    "mixed": ["method=mixed"],
    "finetune": ["method=finetune", "finetune_from=0.0"],
    "real": ["method=real"],
}
L2S = ("l2s-parametric", "l2s-priors", "l2s-residual", "l2s-priors-fit")
QUICK_SETS = ["steps=4", "batch_size=2", "real_batch_size=2", "data.shape=[64,64]", "augmenter.check_every=2",
              "augmenter.channels=[4,8]"]


SKULL_ON = "skull-on"


def domain(data: Path, subject: str, contrast: str):
    """(image volume in the target contrast, seg4) of an OASIS subject. ``skull-on``: the subject's one raw slice
    with the skull (``slice_orig``, coronal slice 109 of the aligned volume) and its labels, as a one-slice volume."""
    import nibabel as nib

    folder = data / "brain" / "oasis" / SUBJECTS[subject]
    if contrast == SKULL_ON:
        image = np.asarray(nib.load(folder / "slice_orig.nii.gz").dataobj, dtype=np.float32)
        return image, np.asarray(nib.load(folder / "slice_seg4.nii.gz").dataobj).astype(np.int64)
    t1 = np.asarray(nib.load(folder / "aligned_norm.nii.gz").dataobj, dtype=np.float32)
    seg = np.asarray(nib.load(folder / "aligned_seg4.nii.gz").dataobj).astype(np.int64)
    return contrasts.make_contrast(t1, seg, contrast, seed=int(subject)), seg


def brain_slices(seg: np.ndarray, min_fraction: float = 0.0) -> np.ndarray:
    area = (seg > 0).sum(axis=(0, 1))
    return np.nonzero((area > 0) & (area >= min_fraction * area.max()))[0]


def pick(seg: np.ndarray, k: int | None) -> list[int]:
    """K slices spread evenly over the slices with at least a quarter of the largest brain area (all: None)."""
    candidates = brain_slices(seg, 0.25)
    if k is None or k >= len(candidates):
        return [int(z) for z in candidates]
    positions = np.linspace(0, len(candidates) - 1, k + 2)[1:-1] if k > 1 else [len(candidates) // 2]
    return [int(candidates[int(round(p))]) for p in positions]


def prepare(args, work: Path):
    """The K training slices (a manifest; each slice its own 'subject', so some can be held out for validation)
    and the test volume's slices."""
    image_a, seg_a = domain(Path(args.data), args.train_subject, args.contrast)
    image_b, seg_b = domain(Path(args.data), args.test_subject, args.contrast)
    folder = work / f"real_{args.contrast}_{args.train_subject}_K{args.k}"
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for z in pick(seg_a, None if args.k == "all" else int(args.k)):
        img = common.save_npz(folder / f"z{z:03d}_image.npz", image=image_a[:, :, z])
        lab = common.save_npz(folder / f"z{z:03d}_label.npz", label=seg_a[:, :, z])
        pairs.append((img, lab, f"{args.train_subject}_z{z:03d}"))
    manifest = common.write_manifest(work / f"real_{args.contrast}_K{args.k}.yaml", pairs)
    zs = brain_slices(seg_b)[:: args.test_every]
    name = f"OAS1_{args.test_subject} {args.contrast}"
    test = common.TestSet(name, [image_b[:, :, z] for z in zs], [seg_b[:, :, z] for z in zs],
                          [f"z{z:03d}" for z in zs], (1.0, 1.0), volumes=[f"OAS1_{args.test_subject}"] * len(zs))
    return manifest, test, len(pairs)


def best_l2s(results: list, work: Path, tag: str) -> str | None:
    """The Learn2Synth variant with the best last validation Dice on the held-out K examples (None if none)."""
    from learn2synth.runlog import series

    scores = {}
    for r in results:
        if r.method in L2S and r.tag == tag:
            metrics = work / "runs" / f"{tag}_{r.method}".replace("=", "") / "metrics.csv"
            val = series(metrics, ["val_dice_mean"])["val_dice_mean"] if metrics.exists() else []
            if val:
                scores[r.method] = val[-1][1]
    return max(scores, key=scores.get) if scores else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--model", help="checkpoint or run folder to adapt (default: the shipped brain model)")
    parser.add_argument("--contrast", default="flair", choices=["t1", *contrasts.TARGETS, SKULL_ON],
                        help=f"target domain; {SKULL_ON}: the raw scan with the skull, one slice per subject (so K=1 "
                             "and the test is that one slice of the other subject)")
    parser.add_argument("--train-subject", default="0001", choices=list(SUBJECTS))
    parser.add_argument("--test-subject", default="0002", choices=list(SUBJECTS))
    parser.add_argument("--k", default="5", help="labeled training slices of the train subject, or 'all'")
    parser.add_argument("--steps", type=int, default=300, help="extra training steps of every method")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--test-every", type=int, default=1, help="score every n-th brain slice of the test subject")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps, one seed, few test slices")
    parser.add_argument("--work", help="keep runs here (resumable)")
    parser.add_argument("--out", help="report (default benchmarks/results/adapt_<contrast>.md)")
    parser.add_argument("--existing-only", action="store_true",
                        help="train nothing: report the runs already finished in --work (methods without a finished "
                             "run for a seed are left out of that seed)")
    args = parser.parse_args(argv)
    if args.train_subject == args.test_subject:
        parser.error("--train-subject and --test-subject must differ (never one subject on both sides)")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if args.contrast == SKULL_ON and args.k not in ("1", "all"):
        parser.error(f"--contrast {SKULL_ON} has one labeled slice per subject: use --k 1")
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    if args.quick:
        args.test_every = max(args.test_every, 20)
    from learn2synth.adapt import adapt_config
    from learn2synth.checkpoint import resolve_checkpoint
    from learn2synth.segment import shipped_model_path

    model = resolve_checkpoint(args.model or shipped_model_path())
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        manifest, test, n_real = prepare(args, work)
        results = []
        for seed in seeds:
            def build(method, seed=seed):
                sets = [*METHODS[method], f"seed={seed}", f"steps={args.steps}", f"threads={args.threads}",
                        "checkpoint_every=100000", "val_every=100000", "log_every=10", "keep_checkpoints=1",
                        *(QUICK_SETS if args.quick else []), *args.sets]
                return adapt_config(model, manifest, sets=sets)

            tag = f"seed={seed}"
            todo = methods
            if args.existing_only:
                todo = [m for m in methods if m == "start" or (work / "runs" / f"{tag}_{m}".replace("=", "")
                                                               / f"step_{args.steps:06d}.pt").exists()]
            results += common.run_methods(todo, build, [test], work, len(CLASSES) + 1, tag=tag,
                                          fixed={"start": model})
            best = best_l2s(results, work, tag)
            if best:
                pick = next(r for r in results if r.method == best and r.tag == tag)
                results.append(common.Result("l2s-best", tag, pick.seconds, pick.per_case, pick.per_volume,
                                             pick.predictions, {"chosen": L2S.index(best)}))
        notes = [stripped_reference(args, model, work)] if args.contrast == SKULL_ON else []
        write_report(args, argv, results, test, n_real, model, time.perf_counter() - t0, notes)
    return 0


def priors_report(results: list, work: Path | None, out: Path) -> str:
    """The learned GMM mean range of each intensity class, one column per seed (from each l2s-priors run's
    ``learned_priors.md``), and the first seed's figure of class intensities (real vs synthesized) beside ``out``."""
    import shutil

    from learn2synth.report_priors import priors_table

    runs = [(r.tag, work / "runs" / f"{r.tag}_{r.method}".replace("=", "")) for r in results
            if r.method == "l2s-priors" and work is not None]
    runs = [(tag, run) for tag, run in runs if (run / "learned_priors.md").exists()]
    if not runs:
        return ""
    rows = (runs[0][1] / "learned_priors.md").read_text().splitlines()
    names = [line.split("|")[1].strip() for line in rows if line.startswith("| ") and "---" not in line][1:]
    tables = {tag: priors_table(run) for tag, run in runs}
    lines = ["GMM mean range [lo, hi] of each intensity class after adaptation, in the synthesis's units before its "
             "min-max normalization (the model's training range is [0, 1] for every class).", "",
             "| intensity class | " + " | ".join(tables) + " |", "|---|" + "---|" * len(tables)]
    for i, name in enumerate(names):
        cells = [f"[{t[i]['mean_lo']:.2f}, {t[i]['mean_hi']:.2f}]" if i < len(t) else "-" for t in tables.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    tag = runs[0][0]
    for method in ("l2s-priors", "l2s-priors-fit", "fit-only"):
        figure = work / "runs" / f"{tag}_{method}".replace("=", "") / "learned_priors.png"
        if figure.exists():
            target = out.with_name(f"{out.stem}_{method}_priors.png")
            shutil.copyfile(figure, target)
            lines += ["", f"![class intensities, {method}, {tag}]({target.name})", "",
                      f"Intensity per target class: the K real slices against images synthesized with the priors "
                      f"of `{method}` at the end of its run ({tag})."]
    return "\n".join(lines)


def stripped_reference(args, model: Path, work: Path) -> str:
    """A report line: the start model on the test subject's same slice skull-stripped (``slice_norm``), what the
    skull costs before any adaptation."""
    import nibabel as nib

    folder = Path(args.data) / "brain" / "oasis" / SUBJECTS[args.test_subject]
    image = np.asarray(nib.load(folder / "slice_norm.nii.gz").dataobj, dtype=np.float32)[:, :, 0]
    _, seg = domain(Path(args.data), args.test_subject, SKULL_ON)
    test = common.TestSet("stripped", [image], [seg[:, :, 0]], ["slice_norm"], (1.0, 1.0), volumes=["stripped"])
    result, = common.run_methods(["start"], None, [test], work, len(CLASSES) + 1, fixed={"start": model})
    return (f"- Reference: the start model on the same slice of OAS1_{args.test_subject} skull-stripped "
            f"(`slice_norm`): volume Dice {result.per_volume['stripped'][0]['dice']:.3f}.")


def write_report(args, argv, results, test, n_real, model, seconds, notes=()) -> None:
    out = Path(args.out or common.REPO / "benchmarks" / "results" / f"adapt_{args.contrast}.md")
    recipe = ("the raw scan with the skull, `slice_orig`: one slice per subject, coronal slice 109"
              if args.contrast == SKULL_ON else "recipe in `benchmarks/experiments/contrasts.py`")
    lines = common.report_head(f"Adapting the brain model to {args.contrast} with K={args.k} labeled slices",
                               args.quick, common.command_line(__file__, argv))
    lines += [f"- Start model: `{model.name}`; every method trains {args.steps} more steps from it "
              "(`learn2synth.adapt.adapt_config`).",
              f"- Target domain: `{args.contrast}` ({recipe}). Training: "
              f"{n_real} labeled coronal slices of OAS1_{args.train_subject}; test: every {args.test_every}-th brain "
              f"slice of OAS1_{args.test_subject}.",
              *notes, f"- {common.environment()}; {seconds / 60:.1f} min in all.", "",
              "## Volume Dice over seeds (headline)", "", common.summary_table(results, test.name), "",
              "## Per seed: volume Dice per class", "", common.volume_table(results, test.name, CLASSES), "",
              "## Per seed: per-slice Dice, Wilcoxon over slices against synthseg (continued)", "",
              common.results_table(results, test.name, CLASSES), "",
              "## Learned synthesis priors (l2s-priors)", "", priors_report(results, Path(args.work) if args.work
                                                                        else None, out) or "(none)", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
