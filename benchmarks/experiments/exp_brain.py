"""Brain experiment: every training method on OASIS, K in {1, 5, 20} real labeled coronal slices.

- Real training data: K brain-containing slices (axis 2) of OASIS subject 0001 (``aligned_norm`` /
  ``aligned_seg4``), evenly spaced over the slices whose brain area is at least a quarter of the largest.
- Synthesis: SynthSeg's 20 training label maps (every ``--every``-th brain-containing slice along the same
  axis, cropped to 160 x 192 around the brain), mapped to the 4 OASIS tissue classes by
  ``configs/mappings/synthseg_to_tissue4.yaml`` (each raw label keeps its own intensity class), plus the K real
  label maps (copied into the synthesis pool in SynthSeg label values, the mapping's inverse).
- Test: every brain-containing slice of subject 0002 (``aligned_norm``), and subject 0002's ``slice_orig``
  (raw T1 with skull: a domain shift) against ``slice_seg4``.

    python benchmarks/experiments/exp_brain.py --data ../shared/data            # full: K = 1, 5, 20
    python benchmarks/experiments/exp_brain.py --data ../shared/data --quick    # smoke run (< 5 min)

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

CONFIG = common.REPO / "configs" / "experiments" / "brain.yaml"
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


def brain_slices(seg: np.ndarray, min_fraction: float = 0.0) -> np.ndarray:
    area = (seg > 0).sum(axis=(0, 1))
    return np.nonzero((area > 0) & (area >= min_fraction * area.max()))[0]


def pick_training_slices(seg: np.ndarray, k: int) -> list[int]:
    candidates = brain_slices(seg, 0.25)
    positions = np.linspace(0, len(candidates) - 1, k + 2)[1:-1] if k > 1 else [len(candidates) // 2]
    return [int(candidates[int(round(p))]) for p in positions]


def prepare(data: Path, work: Path, ks: list[int], every: int, n_maps: int, test_every: int, strip: bool):
    from learn2synth.io import load_label_mapping

    mapping = load_label_mapping(MAPPING)
    inverse = mapping.inverse()
    t0 = time.perf_counter()
    synth_files = synthseg_slices(data, work / "synthseg_slices", every, n_maps, mapping, strip)
    print(f"{len(synth_files)} SynthSeg slices prepared in {time.perf_counter() - t0:.0f} s", flush=True)
    oasis = data / "brain" / "oasis"
    image1 = load(oasis / "OASIS_OAS1_0001_MR1" / "aligned_norm.nii.gz").astype(np.float32)
    seg1 = load(oasis / "OASIS_OAS1_0001_MR1" / "aligned_seg4.nii.gz").astype(np.int32)
    sets = {}
    for k in ks:
        picks = pick_training_slices(seg1, k)
        real_dir, label_dir = work / f"real_K{k}", work / f"labels_K{k}"
        real_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        pairs = []
        for z in picks:
            img = common.save_npz(real_dir / f"OAS1_0001_z{z:03d}_image.npz", image=image1[:, :, z])
            lab = common.save_npz(real_dir / f"OAS1_0001_z{z:03d}_label.npz", label=seg1[:, :, z].astype(np.int32))
            pairs.append((img, lab, "OAS1_0001"))
            # the synthesis pool takes the same map in SynthSeg label values, the space of data.label_mapping
            common.save_npz(label_dir / f"OAS1_0001_z{z:03d}_label.npz", label=inverse(seg1[:, :, z]).astype(np.int32))
        for f in synth_files:
            common.link(f, label_dir / f.name)
        manifest = common.write_manifest(work / f"real_K{k}.yaml", pairs)
        sets[k] = ([f"data.labels={label_dir}", f"data.real={manifest}", f"data.label_mapping={MAPPING}"], picks)

    image2 = load(oasis / "OASIS_OAS1_0002_MR1" / "aligned_norm.nii.gz").astype(np.float32)
    seg2 = load(oasis / "OASIS_OAS1_0002_MR1" / "aligned_seg4.nii.gz").astype(np.int64)
    zs = brain_slices(seg2)[::test_every]
    test = common.TestSet("OAS1_0002 aligned_norm (all brain slices)", [image2[:, :, z] for z in zs],
                          [seg2[:, :, z] for z in zs], [f"z{z:03d}" for z in zs], (1.0, 1.0),
                          volumes=["OAS1_0002"] * len(zs))
    orig = load(oasis / "OASIS_OAS1_0002_MR1" / "slice_orig.nii.gz")[:, :, 0].astype(np.float32)
    oseg = load(oasis / "OASIS_OAS1_0002_MR1" / "slice_seg4.nii.gz")[:, :, 0].astype(np.int64)
    shift = common.TestSet("OAS1_0002 slice_orig (raw, skull on)", [orig], [oseg], ["slice_orig"], (1.0, 1.0))
    norm = load(oasis / "OASIS_OAS1_0002_MR1" / "slice_norm.nii.gz")[:, :, 0].astype(np.float32)
    same = common.TestSet("OAS1_0002 slice_norm (same slice, skull-stripped)", [norm], [oseg], ["slice_norm"],
                          (1.0, 1.0))
    return sets, [test, same, shift], len(synth_files)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser, str(common.REPO / "benchmarks" / "results" / "exp_brain.md"))
    parser.add_argument("--k", default="1,5,20", help="numbers of real labeled training slices")
    parser.add_argument("--every", type=int, default=8, help="keep every n-th brain slice of each SynthSeg map")
    parser.add_argument("--maps", type=int, default=20, help="how many SynthSeg label maps to use")
    parser.add_argument("--test-every", type=int, default=1, help="score every n-th brain slice of subject 0002")
    parser.add_argument("--keep-non-brain", action="store_true",
                        help="keep SynthSeg's extra-cerebral labels (own random intensities) instead of background 0")
    args = parser.parse_args(argv)
    args.command = common.command_line(__file__, argv)
    import torch

    from learn2synth.train_config import load_train_config

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    data = Path(args.data).resolve()
    ks = [int(k) for k in args.k.split(",")]
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
    sets_by_k, tests, n_synth = prepare(data, work, ks, args.every, args.maps, args.test_every,
                                       not args.keep_non_brain)
    extra = [*(QUICK_SETS if args.quick else []), *([f"steps={args.steps}"] if args.steps else []),
             f"threads={args.threads}", f"seed={args.seed}", *args.sets]
    results = []
    for k in ks:
        data_sets, picks = sets_by_k[k]

        def build(method, data_sets=data_sets):
            return load_train_config(CONFIG, [*data_sets, *common.METHODS[method], *extra])

        results += common.run_methods(methods, build, tests, work, n_classes=5, tag=f"K={k}")
    total = time.perf_counter() - t_start
    config = load_train_config(CONFIG, [*sets_by_k[ks[0]][0], *extra])
    write_report(Path(args.out), results, tests, args, config, sets_by_k, n_synth, extra, total, ks)
    if args.work:
        common.dump_json(work / "results.json", results, {"seconds": total})
    if tmp is not None:
        tmp.cleanup()
    print(f"wrote {args.out} ({total:.0f} s)")
    return 0


def write_report(out: Path, results, tests, args, config, sets_by_k, n_synth, extra, total, ks) -> None:
    test, same, shift = tests
    fig = out.with_suffix(".png")
    k_fig = ks[len(ks) // 2] if len(ks) > 1 else ks[0]
    shown = [r for r in results if r.tag == f"K={k_fig}"]
    n = len(test.cases)
    picks = sorted({n // 4, n // 2, (3 * n) // 4})
    common.figure(fig, shown, test, picks, f"OASIS subject 0002, coronal slices; K = {k_fig} real training slices "
                  "(Dice per slice above each prediction)", transpose=True)
    fig2 = out.with_name(out.stem + "_shift.png")
    common.figure(fig2, shown, shift, [0], f"slice_orig (raw, skull on), K = {k_fig}", transpose=True)
    by_method = {}
    for r in results:
        by_method.setdefault(r.method, []).append(r.seconds)
    lines = [
        *common.report_head("Brain (OASIS): every training method, K real labeled slices", args.quick, args.command),
        f"Run time: {total / 60:.1f} min in total; {common.environment()}.", "",
        "## Setting",
        f"- Segmenter: MONAI U-Net channels {config.net.channels}, {config.net.num_res_units} residual unit(s), "
        f"instance norm, {config.net.act}; Adam lr {config.optim.lr}; loss {config.loss}; "
        f"**{config.steps} steps** of batch {config.batch_size}, random {config.data.shape} crops, for every method.",
        f"- Synthesis (synthseg, mixed, finetune, both learn2synth): preset `{config.synth_preset}` from "
        f"{n_synth} SynthSeg label-map slices (every {args.every}-th brain slice of {args.maps} maps, axis {AXIS}, "
        f"cropped to {CROP[0]}x{CROP[1]}) plus the K real label maps; mapping `configs/mappings/"
        "synthseg_to_tissue4.yaml`, each raw label its own intensity class; "
        + ("SynthSeg's extra-cerebral labels kept, each with its own random intensity." if args.keep_non_brain else
           "every label mapped to background set to 0 (one background intensity class, like the skull-stripped "
           "OASIS images; `--keep-non-brain` keeps them)."),
        f"- learn2synth: the augmenter sits on top of that same synthesis; meta mode `{config.meta.mode}`, "
        f"parametric (noise sigma init {config.augmenter.noise_init}, bias exponents init "
        f"{config.augmenter.bias_init}, lr {config.augmenter.lr}) or residual U-Net {config.augmenter.channels} "
        "(lr 0.001). The K real slices only drive the hypergradient; they never train the segmenter.",
        f"- real: the K real slices only (mild random deformation). mixed: {config.mixed_fraction:.0%} of each "
        f"batch real. finetune: synthetic for {config.finetune_from:.0%} of the steps, then real.",
        "- Training slices of subject 0001 (axis-2 index): " + "; ".join(
            f"K={k}: {sets_by_k[k][1]}" for k in ks),
        f"- Test: {len(test.cases)} brain-containing axis-2 slices of subject 0002 (every {args.test_every}-th), "
        "segmented whole with `learn2synth.inference.predict_array` (training normalization), scored with "
        "`learn2synth.metrics.label_metrics` (1 mm spacing).",
        f"- Overrides on top of `configs/experiments/brain.yaml`: `{' '.join(extra)}`.", "",
        "Per slice: Dice = mean over the tissue classes present in reference or prediction; HD95 (mm) = mean over "
        "classes with a finite distance ('HD95 inf' counts class-slices where one side is empty). Wilcoxon: "
        "two-sided signed-rank test, paired over test slices, against synthseg with the same K. ", "",
        f"## {test.name}", "",
        "Headline, the papers' protocol: Dice per class over the whole volume (the test slices stacked; with "
        "--test-every > 1, every n-th slice):", "", common.volume_table(results, test.name, CLASSES), "",
        "Per slice (Wilcoxon over slices; see the caption above):", "",
        common.results_table(results, test.name, CLASSES), "",
        f"## Domain shift: {shift.name} (one slice; no statistics)", "",
        common.results_table(results, shift.name, CLASSES), "",
        f"Same slice skull-stripped ({same.name}) for reference:", "",
        common.results_table(results, same.name, CLASSES), "",
        "## Learned augmenter values (parametric)", "", common.learned_table(results) or "(none)", "",
        f"## Figures (K = {k_fig})", "", f"![predictions]({fig.name})", "", f"![domain shift]({fig2.name})", "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
