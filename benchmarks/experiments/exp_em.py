"""EM experiment: every training method on the Drosophila VNC ssTEM stack 1, mitochondria vs rest.

- Real training data: ``--train`` slices (default 3: 00, 01, 02) of the 20 (raw/NN.tif, merged labels PNG).
- Synthesis: from the merged label maps of those training slices only (each merged value its own intensity
  class: membranes, junctions, glia, mitochondria, synapses, intracellular), targets through
  ``configs/mappings/em_mitochondria.yaml``; random crops of ``data.shape``.
- Test: the other 17 slices, segmented whole (1024 x 1024), reference = merged labels through the same mapping.

    python benchmarks/experiments/exp_em.py --data ../shared/data            # full
    python benchmarks/experiments/exp_em.py --data ../shared/data --quick    # smoke run (< 5 min)

Writes ``benchmarks/results/exp_em.md`` and ``exp_em.png``. :func:`run_2d` is shared with ``exp_isbi.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

QUICK_SETS = ["steps=12", "data.shape=[64,64]", "net.channels=[8,16,32]", "augmenter.channels=[4,8]",
              "batch_size=4", "real_batch_size=4"]


@dataclass
class Experiment:
    name: str  # "em" / "isbi"
    title: str
    config: Path
    mapping: Path
    pairs: list[tuple[Path, Path]]  # (image, merged label) for every slice, in order
    class_names: list[str]
    description: list[str]  # bullet lines of the report
    # training pairs block-reduced by this factor (images: block mean, labels: block mode); test images are
    # reduced the same way for prediction and scored at full resolution (common.predict_zoomed)
    downsample: int = 1


def em_pairs(data: Path) -> list[tuple[Path, Path]]:
    from learn2synth.io import list_files

    stack = data / "em" / "drosophila_vnc" / "stack1"
    images, labels = list_files(stack / "raw"), list_files(stack / "labels")
    if len(images) != len(labels):
        raise SystemExit(f"{stack}: {len(images)} raw images but {len(labels)} label maps")
    return list(zip(images, labels, strict=True))


def read2d(path: Path) -> np.ndarray:
    from learn2synth.io import read_image, squeeze_2d

    array = read_image(path).array
    return squeeze_2d(array) if array.ndim == 3 else array


def parse_indices(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def training_pairs(exp: Experiment, ids: list[int], zoom: int, work: Path) -> list[tuple[Path, Path]]:
    """The (image, merged label) files of the training slices: the originals, or for ``zoom`` > 1 their block
    reductions written once into ``work`` (image: block mean, label: block mode of the merged values)."""
    from learn2synth.io import write_npz

    if zoom == 1:
        return [exp.pairs[i] for i in ids]
    folder = work / f"reduced{zoom}"
    folder.mkdir(exist_ok=True)
    out = []
    for i in ids:
        image, label = (folder / f"{kind}_slice{i:02d}.npz" for kind in ("image", "label"))
        if not (image.exists() and label.exists()):
            write_npz(image, {"image": common.block_mean(read2d(exp.pairs[i][0]).astype(np.float32), zoom)})
            write_npz(label, {"label": common.block_mode(read2d(exp.pairs[i][1]), zoom)})
        out.append((image, label))
    return out


def run_2d(exp: Experiment, args) -> int:
    """Prepare the data of a 2D few-slice experiment, train every method, score and write the report."""
    import torch

    from learn2synth.io import load_label_mapping
    from learn2synth.train_config import load_train_config

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    methods = common.method_list(args.methods)
    train_ids = parse_indices(args.train)
    test_ids = [i for i in range(len(exp.pairs)) if i not in train_ids]
    if args.quick:
        test_ids = test_ids[:2]
    tmp = None
    if args.work:
        work = Path(args.work).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix=f"exp_{exp.name}_")
        work = Path(tmp.name)
    zoom = args.downsample or exp.downsample
    train_pairs = training_pairs(exp, train_ids, zoom, work)
    label_dir = work / "labels"
    label_dir.mkdir(exist_ok=True)
    for _, label in train_pairs:
        common.link(label, label_dir / label.name)
    rows = [(image, label, f"slice{i:02d}") for i, (image, label) in zip(train_ids, train_pairs, strict=True)]
    manifest = common.write_manifest(work / "real.yaml", rows)
    mapping = load_label_mapping(exp.mapping)
    images, refs, cases = [], [], []
    for i in test_ids:
        image, ref = read2d(exp.pairs[i][0]).astype(np.float32), mapping(read2d(exp.pairs[i][1]))
        if args.test_crop:
            image, ref = image[: args.test_crop, : args.test_crop], ref[: args.test_crop, : args.test_crop]
        images.append(image)
        refs.append(ref)
        cases.append(f"slice{i:02d}")
    test = common.TestSet(f"{len(test_ids)} held-out slices", images, refs, cases, None, zoom=zoom)
    data_sets = [f"data.labels={label_dir}", f"data.real={manifest}", f"data.label_mapping={exp.mapping}",
                 f"data.real_label_mapping={exp.mapping}"]
    extra = [*(QUICK_SETS if args.quick else []), *([f"steps={args.steps}"] if args.steps else []),
             f"threads={args.threads}", *args.sets]
    seeds = common.seed_list(args)

    def build(method, seed=seeds[0]):
        return load_train_config(exp.config, [*data_sets, *common.METHODS[method], *extra, f"seed={seed}"])

    results = []
    for seed in seeds:  # one seed keeps the tag (and the run folders) of the single-seed reports
        tag = f"{len(train_ids)} slices" + (f", seed={seed}" if len(seeds) > 1 else "")
        results += common.run_methods(methods, lambda m, s=seed: build(m, s), [test], work,
                                      n_classes=len(exp.class_names) + 1, tag=tag)
    total = time.perf_counter() - t_start
    config = build(methods[0])
    out = Path(args.out)
    fig = out.with_suffix(".png")
    size = min(256, *test.images[0].shape)
    crop = (slice(0, size), slice(0, size))
    common.figure(fig, results, test, list(range(min(2, len(test_ids)))),
                  f"{exp.title}: top-left {size}x{size} of held-out slices (Dice of the whole slice above each "
                  "prediction)", crop=crop)
    lines = [
        *common.report_head(f"{exp.title}: every training method, {len(train_ids)} real labeled slices", args.quick,
                            args.command),
        f"Run time: {total / 60:.1f} min in total; {common.environment()}.", "",
        "## Setting",
        *exp.description,
        f"- Real training slices: {train_ids}; test: {cases} ({len(cases)} slices"
        + (f", top-left {args.test_crop} px crop" if args.test_crop else ", whole") + ").",
        f"- Segmenter: MONAI U-Net channels {config.net.channels}, {config.net.num_res_units} residual unit(s), "
        f"instance norm, {config.net.act}; Adam lr {config.optim.lr}; loss {config.loss}; "
        f"**{config.steps} steps** of batch {config.batch_size}, random {config.data.shape} crops, for every method.",
        *([f"- Resolution: training slices reduced {zoom}x (image: {zoom}x{zoom} block mean; labels: block mode of "
           "the merged values); test slices reduced the same way for prediction, the probabilities upsampled "
           "bilinearly and scored at full resolution."] if zoom > 1 else []),
        f"- Synthesis (synthseg, mixed, finetune, both learn2synth): preset `{config.synth_preset}` with the "
        f"overrides of `{exp.config.relative_to(common.REPO)}`. learn2synth: augmenter on top of that synthesis, "
        f"meta mode `{config.meta.mode}`, hypergradient every {config.meta.meta_every} step(s); parametric "
        f"(noise sigma init {config.augmenter.noise_init}, bias init {config.augmenter.bias_init}, lr "
        f"{config.augmenter.lr}) or residual U-Net {config.augmenter.channels} (lr 0.001). Real slices drive only "
        "the hypergradient.",
        f"- real: the real slices only (mild random deformation). mixed: {config.mixed_fraction:.0%} of each batch "
        f"real. finetune: synthetic for {config.finetune_from:.0%} of the steps, then real.",
        *([f"- Start: every method starts from the segmenter of `{config.init_from}` (parameters only, fresh "
           "optimizer): an adaptation of that model, not training from scratch."] if config.init_from else []),
        f"- Overrides on top of the config: `{' '.join(extra)}`; seed(s) {seeds}.",
        "- Test slices segmented whole with `learn2synth.inference.predict_array`, scored with "
        "`learn2synth.metrics.label_metrics` (pixel units). Wilcoxon: two-sided signed-rank, paired over test "
        "slices, against synthseg (within one seed).", "",
        *(["## Over seeds (headline)", "", common.summary_table(results, test.name), ""] if len(seeds) > 1 else []),
        "## Results", "", common.results_table(results, test.name, exp.class_names), "",
        "## Learned augmenter values (parametric)", "", common.learned_table(results) or "(none)", "",
        "## Figure", "", f"![predictions]({fig.name})", "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    if args.work:
        common.dump_json(work / "results.json", results, {"seconds": total})
    if tmp is not None:
        tmp.cleanup()
    print(f"wrote {out} ({total:.0f} s)")
    return 0


def parser(name: str, train: str):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(p, str(common.REPO / "benchmarks" / "results" / f"exp_{name}.md"))
    p.add_argument("--train", default=train, help="comma-separated indices of the real training slices")
    p.add_argument("--test-crop", type=int, default=0, help="score only the top-left N x N of each test slice")
    p.add_argument("--downsample", type=int, default=0,
                   help="train at 1/N resolution and predict test slices reduced the same way (scored at full "
                        "resolution); 0: the experiment's default")
    p.add_argument("--seeds", help="comma-separated seeds: every method is trained once per seed and the report "
                                   "adds the spread over seeds (overrides --seed)")
    return p


def parse(name: str, script: str, argv):
    """The arguments of an EM experiment's command line (``script``: the experiment's file, for the report)."""
    args = parser(name, "0,1,2").parse_args(argv)
    args.command = common.command_line(script, argv)
    if args.quick and not args.test_crop:
        args.test_crop = 256
    return args, Path(args.data).resolve()


def main(argv=None) -> int:
    args, data = parse("em", __file__, argv)
    exp = Experiment(
        "em", "Drosophila VNC ssTEM (mitochondria)", common.REPO / "configs" / "experiments" / "em.yaml",
        common.REPO / "configs" / "mappings" / "em_mitochondria.yaml", em_pairs(data), ["mito"],
        ["- Data: `em/drosophila_vnc/stack1` (20 slices, 1024 x 1024): raw/NN.tif with the merged labels "
         "labels/*.png; mitochondria = merged value 191 (`configs/mappings/em_mitochondria.yaml`).",
         "- Synthesis from the merged label maps of the training slices only (each merged value its own "
         "intensity class), random crops."], downsample=2)
    return run_2d(exp, args)


if __name__ == "__main__":
    raise SystemExit(main())
