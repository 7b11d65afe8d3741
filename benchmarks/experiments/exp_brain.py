"""Brain experiment: every training method from scratch on OASIS, K real labeled coronal slices of one subject,
tested on the other subject (and the reverse).

- Real training data: K brain-containing slices (axis 2) of one OASIS subject (``aligned_norm`` /
  ``aligned_seg4``), evenly spaced over the slices whose brain area is at least a quarter of the largest.
- Synthesis: the shipped brain model's (``configs/experiments/brain_tissue.yaml``): SynthSeg's 20 training label
  maps (every ``--every``-th brain-containing slice along the same axis, cropped to 160 x 192 around the brain,
  non-brain labels kept: the synthesis gives them their own intensities and strips them at random), mapped to the
  4 OASIS tissue classes by ``configs/mappings/synthseg_to_tissue4.yaml`` (one intensity per tissue group), plus
  the K real label maps (in SynthSeg label values, the mapping's inverse).
- Test: every brain-containing slice of the other subject (``aligned_norm``), scored as the papers do (Dice per
  class over the whole volume; per slice beside it), and its ``slice_orig`` (raw T1 with skull: a domain shift)
  against ``slice_seg4``.

    python benchmarks/experiments/exp_brain.py --data ../shared/data --k 5     # both directions, K = 5
    python benchmarks/experiments/exp_brain.py --data ../shared/data --quick   # smoke run (< 5 min)

Writes ``benchmarks/results/exp_brain.md`` and ``exp_brain.png`` (``--out`` to change).
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
from exp_adapt import SUBJECTS, brain_slices, pick  # noqa: E402  (the OASIS subjects and slice choice, one place)

CONFIG = common.REPO / "configs" / "experiments" / "brain_tissue.yaml"
MAPPING = common.REPO / "configs" / "mappings" / "synthseg_to_tissue4.yaml"
CLASSES = ["cortex", "subcort. GM", "WM", "CSF"]
AXIS = 2
CROP = (160, 192)  # the OASIS slice size
QUICK_SETS = ["steps=12", "data.shape=[64,64]", "net.channels=[8,16,32]", "augmenter.channels=[4,8]",
              "batch_size=4", "real_batch_size=4"]


def load(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asanyarray(nib.load(str(path)).dataobj)


def crop_around(slice2d: np.ndarray, centre, size) -> np.ndarray:
    """A ``size`` window of ``slice2d`` centred on ``centre`` (shifted to stay inside, zero-padded if larger)."""
    out = np.zeros(size, dtype=slice2d.dtype)
    src, dst = [], []
    for c, s, n in zip(centre, size, slice2d.shape, strict=True):
        start = int(round(c - s / 2))
        start = min(max(start, 0), max(n - s, 0))
        length = min(s, n - start)
        src.append(slice(start, start + length))
        dst.append(slice((s - length) // 2, (s - length) // 2 + length))
    out[tuple(dst)] = slice2d[tuple(src)]
    return out


def synthseg_slices(data: Path, folder: Path, every: int, n_maps: int, mapping, strip: bool) -> list[Path]:
    """Every ``every``-th brain-containing slice of the first ``n_maps`` SynthSeg maps, as 2D NPZ label maps.

    ``strip``: every label the mapping sends to background becomes 0 (one background intensity class, like the
    skull-stripped OASIS images) instead of keeping SynthSeg's extra-cerebral labels, each with its own random
    intensity.
    """
    from learn2synth.io import list_files

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path in list_files(data / "brain" / "synthseg_label_maps")[:n_maps]:
        if not path.name.startswith("training_seg"):
            continue
        raw = load(path).astype(np.int32)
        brain = mapping(raw) > 0
        if strip:
            raw = np.where(brain, raw, 0).astype(np.int32)
        keep = np.nonzero(brain.any(axis=(0, 1)))[0][::every]
        box = np.nonzero(brain.any(axis=AXIS))
        centre = [(b.min() + b.max() + 1) / 2 for b in box]
        for k in keep:
            name = f"{path.name.split('.')[0]}_z{k:03d}.npz"
            written.append(common.save_npz(folder / name, label=crop_around(raw[:, :, k], centre, CROP)))
    return written


def prepare_direction(data: Path, work: Path, ks: list[int], synth_files: list[Path], train: str, test: str,
                      test_every: int):
    """The K-slice training sets of subject ``train`` (config sets and slice indices per K) and the test sets of
    subject ``test``."""
    from learn2synth.io import load_label_mapping

    inverse = load_label_mapping(MAPPING).inverse()
    oasis = data / "brain" / "oasis"
    image1 = load(oasis / SUBJECTS[train] / "aligned_norm.nii.gz").astype(np.float32)
    seg1 = load(oasis / SUBJECTS[train] / "aligned_seg4.nii.gz").astype(np.int32)
    sets = {}
    for k in ks:
        picks = pick(seg1, k)
        real_dir, label_dir = work / f"real_{train}_K{k}", work / f"labels_{train}_K{k}"
        real_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        pairs = []
        for z in picks:
            img = common.save_npz(real_dir / f"OAS1_{train}_z{z:03d}_image.npz", image=image1[:, :, z])
            lab = common.save_npz(real_dir / f"OAS1_{train}_z{z:03d}_label.npz", label=seg1[:, :, z].astype(np.int32))
            pairs.append((img, lab, f"OAS1_{train}"))
            # the synthesis pool takes the same map in SynthSeg label values, the space of data.label_mapping
            common.save_npz(label_dir / f"OAS1_{train}_z{z:03d}_label.npz",
                            label=inverse(seg1[:, :, z]).astype(np.int32))
        for f in synth_files:
            common.link(f, label_dir / f.name)
        manifest = common.write_manifest(work / f"real_{train}_K{k}.yaml", pairs)
        sets[k] = ([f"data.labels={label_dir}", f"data.real={manifest}", f"data.label_mapping={MAPPING}"], picks)

    folder = oasis / SUBJECTS[test]
    image2 = load(folder / "aligned_norm.nii.gz").astype(np.float32)
    seg2 = load(folder / "aligned_seg4.nii.gz").astype(np.int64)
    zs = brain_slices(seg2)[::test_every]
    name = f"OAS1_{test} aligned_norm (all brain slices)"
    volume = common.TestSet(name, [image2[:, :, z] for z in zs], [seg2[:, :, z] for z in zs],
                            [f"z{z:03d}" for z in zs], (1.0, 1.0), volumes=[f"OAS1_{test}"] * len(zs))
    orig = load(folder / "slice_orig.nii.gz")[:, :, 0].astype(np.float32)
    oseg = load(folder / "slice_seg4.nii.gz")[:, :, 0].astype(np.int64)
    shift = common.TestSet(f"OAS1_{test} slice_orig (raw, skull on)", [orig], [oseg], ["slice_orig"], (1.0, 1.0))
    norm = load(folder / "slice_norm.nii.gz")[:, :, 0].astype(np.float32)
    same = common.TestSet(f"OAS1_{test} slice_norm (same slice, skull-stripped)", [norm], [oseg], ["slice_norm"],
                          (1.0, 1.0))
    return sets, [volume, same, shift]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser, str(common.REPO / "benchmarks" / "results" / "exp_brain.md"))
    parser.add_argument("--k", default="1,5,20", help="numbers of real labeled training slices")
    parser.add_argument("--directions", default="0001:0002,0002:0001",
                        help="TRAIN:TEST subject pairs (comma-separated): K slices of TRAIN, tested on TEST")
    parser.add_argument("--every", type=int, default=8, help="keep every n-th brain slice of each SynthSeg map")
    parser.add_argument("--maps", type=int, default=20, help="how many SynthSeg label maps to use")
    parser.add_argument("--test-every", type=int, default=1, help="score every n-th brain slice of the test subject")
    parser.add_argument("--strip-non-brain", action="store_true",
                        help="set every label mapped to background to 0 in the label slices (one background "
                             "intensity; the former setting) instead of the synthesis's random skull stripping")
    args = parser.parse_args(argv)
    args.command = common.command_line(__file__, argv)
    import torch

    from learn2synth.io import load_label_mapping
    from learn2synth.train_config import load_train_config

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    data = Path(args.data).resolve()
    ks = [int(k) for k in args.k.split(",")]
    directions = [tuple(pair.split(":")) for pair in args.directions.split(",")]
    unknown = sorted({s for pair in directions for s in pair} - set(SUBJECTS))
    if unknown or any(len(pair) != 2 or pair[0] == pair[1] for pair in directions):
        parser.error(f"--directions {args.directions}: pairs TRAIN:TEST of two different subjects of "
                     f"{', '.join(SUBJECTS)}")
    methods = common.method_list(args.methods)
    if args.quick:
        args.every, args.maps, args.test_every = max(args.every, 32), min(args.maps, 3), max(args.test_every, 16)
    tmp = None
    if args.work:
        work = Path(args.work).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="exp_brain_")
        work = Path(tmp.name)
    t0 = time.perf_counter()
    synth_files = synthseg_slices(data, work / "synthseg_slices", args.every, args.maps,
                                  load_label_mapping(MAPPING), args.strip_non_brain)
    print(f"{len(synth_files)} SynthSeg slices prepared in {time.perf_counter() - t0:.0f} s", flush=True)
    extra = [*(QUICK_SETS if args.quick else []), *([f"steps={args.steps}"] if args.steps else []),
             f"threads={args.threads}", f"seed={args.seed}", *args.sets]
    results, by_direction = [], {}
    for train, test in directions:
        sets_by_k, tests = prepare_direction(data, work, ks, synth_files, train, test, args.test_every)
        by_direction[(train, test)] = (sets_by_k, tests)
        for k in ks:
            data_sets = sets_by_k[k][0]

            def build(method, data_sets=data_sets):
                return load_train_config(CONFIG, [*data_sets, *common.METHODS[method], *extra])

            results += common.run_methods(methods, build, tests, work, n_classes=5, tag=f"K={k} {train}->{test}")
    total = time.perf_counter() - t_start
    first = by_direction[directions[0]][0]
    config = load_train_config(CONFIG, [*first[ks[0]][0], *extra])
    write_report(Path(args.out), results, by_direction, args, config, len(synth_files), extra, total, ks)
    if args.work:
        common.dump_json(work / "results.json", results, {"seconds": total})
    if tmp is not None:
        tmp.cleanup()
    print(f"wrote {args.out} ({total:.0f} s)")
    return 0


def write_report(out: Path, results, by_direction, args, config, n_synth, extra, total, ks) -> None:
    k_fig = ks[len(ks) // 2] if len(ks) > 1 else ks[0]
    (train0, test0), (_, tests0) = next(iter(by_direction.items()))
    volume0, _, shift0 = tests0
    shown = [r for r in results if r.tag == f"K={k_fig} {train0}->{test0}"]
    fig = out.with_suffix(".png")
    n = len(volume0.cases)
    common.figure(fig, shown, volume0, sorted({n // 4, n // 2, (3 * n) // 4}),
                  f"OASIS subject {test0}, coronal slices; K = {k_fig} real training slices of {train0} "
                  "(Dice per slice above each prediction)", transpose=True)
    fig2 = out.with_name(out.stem + "_shift.png")
    common.figure(fig2, shown, shift0, [0], f"slice_orig of {test0} (raw, skull on), K = {k_fig}", transpose=True)
    lines = [
        *common.report_head("Brain (OASIS): every training method from scratch, K real labeled slices of one "
                            "subject, tested on the other", args.quick, args.command),
        f"Run time: {total / 60:.1f} min in total; {common.environment()}.", "",
        "## Setting",
        f"- Segmenter: MONAI U-Net channels {config.net.channels}, {config.net.num_res_units} residual unit(s), "
        f"instance norm, {config.net.act}; Adam lr {config.optim.lr}; loss {config.loss}; "
        f"**{config.steps} steps** of batch {config.batch_size} (real batch {config.real_batch_size}), "
        f"{config.data.shape} images (whole slices), for every method.",
        f"- Synthesis (synthseg, mixed, finetune, both learn2synth): preset `{config.synth_preset}`, "
        f"`synth.normalize: {config.synth.normalize}` (the real images too), from {n_synth} SynthSeg label-map "
        f"slices (every {args.every}-th brain slice of {args.maps} maps, axis {AXIS}, cropped to "
        f"{CROP[0]}x{CROP[1]}) plus the K real label maps; mapping `configs/mappings/synthseg_to_tissue4.yaml` "
        "(one intensity per tissue group); "
        + ("every label mapped to background set to 0 (`--strip-non-brain`)." if args.strip_non_brain else
           f"non-brain labels keep their own random intensities with target 0, and {config.synth.strip.prob:.0%} "
           f"of the images are skull-stripped at a random margin of {config.synth.strip.margin} voxels "
           "(the shipped brain model's synthesis, `configs/experiments/brain_tissue.yaml`)."),
        f"- learn2synth: the augmenter sits on top of that same synthesis; meta mode `{config.meta.mode}`, a "
        f"meta-step every {config.meta.meta_every} steps; parametric (noise sigma init {config.augmenter.noise_init}"
        f", bias exponents init {config.augmenter.bias_init}, lr {config.augmenter.lr}) or residual U-Net "
        f"{config.augmenter.channels} (lr 0.001). The K real slices only drive the hypergradient; they never "
        "train the segmenter.",
        f"- real: the K real slices only (mild random deformation). mixed: {config.mixed_fraction:.0%} of each "
        f"batch real. finetune: synthetic for {config.finetune_from:.0%} of the steps, then real.",
        *[f"- Training slices of subject {train} (axis-2 index): " + "; ".join(
            f"K={k}: {sets[k][1]}" for k in ks) for (train, _), (sets, _) in by_direction.items()],
        f"- Test: the other subject's brain-containing axis-2 slices (every {args.test_every}-th), segmented whole "
        "with `learn2synth.inference.predict_array` (training normalization).",
        f"- Overrides on top of `configs/experiments/brain_tissue.yaml`: `{' '.join(extra)}`.", "",
        "Headline, the papers' protocol: Dice per class over the whole test volume (its slices stacked). Per slice "
        "beside it: Dice = mean over the tissue classes present in reference or prediction; HD95 (mm) = mean over "
        "classes with a finite distance ('HD95 inf' counts class-slices where one side is empty). Wilcoxon: "
        "two-sided signed-rank test, paired over test slices (one test subject per direction: too few subjects "
        "for a test over subjects), against synthseg with the same K and direction.", "",
    ]
    for (train, test), (_, (volume, same, shift)) in by_direction.items():
        lines += [f"## Trained with slices of {train}, tested on {test}", "",
                  f"### {volume.name}: volume Dice (headline)", "", common.volume_table(results, volume.name, CLASSES),
                  "", "Per slice:", "", common.results_table(results, volume.name, CLASSES), "",
                  f"### Domain shift: {shift.name} (one slice; no statistics)", "",
                  common.results_table(results, shift.name, CLASSES), "",
                  f"Same slice skull-stripped ({same.name}) for reference:", "",
                  common.results_table(results, same.name, CLASSES), ""]
    lines += ["## Learned augmenter values (parametric)", "", common.learned_table(results) or "(none)", "",
              f"## Figures (K = {k_fig}, trained on {train0}, tested on {test0})", "",
              f"![predictions]({fig.name})", "", f"![domain shift]({fig2.name})", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
