"""Feature-level adversarial adaptation (method feature_da) against synthseg at the same step budget, on OASIS.

- Source (both methods): images synthesized from SynthSeg's 20 training label maps (every ``--every``-th brain
  slice along axis 2, prepared by ``exp_brain.synthseg_slices``), mapped to the 4 OASIS tissue classes by
  ``configs/mappings/synthseg_to_tissue4.yaml``; synthesis preset and segmenter from
  ``configs/experiments/brain.yaml``.
- Target (feature_da only): every brain slice of OASIS subject 0001 in an unseen contrast made by
  ``contrasts.py`` (default T2-like), UNLABELED: the manifest pairs each image with an all-zero label map, so no
  target label exists in the run at all (tests/test_feature_da.py shows the method never reads them anyway).
- Test: every ``--test-every``-th brain slice of subject 0002 in the same contrast; Dice per class over the
  volume (the papers' protocol) and per slice, Wilcoxon over slices against synthseg.

    .venv/bin/python benchmarks/experiments/exp_feature_da.py --data ../shared/data --steps 400

Writes ``benchmarks/results/feature_da.md`` (``--out`` to change). Resumable with ``--work``.
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
import exp_adapt  # noqa: E402
import exp_brain  # noqa: E402

CONFIG = common.REPO / "configs" / "experiments" / "brain.yaml"
CLASSES = exp_brain.CLASSES
METHODS = {
    "synthseg": ["method=synthseg", "data.real=null"],
    "feature_da": ["method=feature_da"],
}
QUICK_SETS = ["steps=4", "batch_size=2", "real_batch_size=2"]


def prepare(args, work: Path):
    """(data sets for the config, test set, number of synthesis slices, number of target slices)."""
    from learn2synth.io import load_label_mapping

    mapping = load_label_mapping(exp_brain.MAPPING)
    t0 = time.perf_counter()
    synth = exp_brain.synthseg_slices(Path(args.data), work / "synthseg_slices", args.every, args.maps, mapping,
                                      strip=True)
    print(f"{len(synth)} SynthSeg slices prepared in {time.perf_counter() - t0:.0f} s", flush=True)
    image_a, seg_a = exp_adapt.domain(Path(args.data), "0001", args.contrast)
    folder = work / f"target_{args.contrast}"
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for z in exp_adapt.brain_slices(seg_a, 0.1):
        img = common.save_npz(folder / f"z{z:03d}_image.npz", image=image_a[:, :, z])
        unlabeled = common.save_npz(folder / f"z{z:03d}_nolabel.npz", label=np.zeros(seg_a.shape[:2], np.uint8))
        pairs.append((img, unlabeled, "OAS1_0001"))
    manifest = common.write_manifest(work / f"target_{args.contrast}.yaml", pairs)
    image_b, seg_b = exp_adapt.domain(Path(args.data), "0002", args.contrast)
    zs = exp_adapt.brain_slices(seg_b)[:: args.test_every]
    test = common.TestSet(f"OAS1_0002 {args.contrast}", [image_b[:, :, z] for z in zs], [seg_b[:, :, z] for z in zs],
                          [f"z{z:03d}" for z in zs], (1.0, 1.0), volumes=["OAS1_0002"] * len(zs))
    sets = [f"data.labels={work / 'synthseg_slices'}", f"data.real={manifest}",
            f"data.label_mapping={exp_brain.MAPPING}"]
    return sets, test, len(synth), len(pairs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="the shared data folder (read only)")
    parser.add_argument("--contrast", default="t2", choices=list(contrasts.TARGETS))
    parser.add_argument("--steps", type=int, default=400, help="training steps of each method")
    parser.add_argument("--shape", type=int, default=64, help="training crop size (2D, square)")
    parser.add_argument("--every", type=int, default=8, help="keep every n-th brain slice of each SynthSeg map")
    parser.add_argument("--maps", type=int, default=20, help="how many SynthSeg label maps to use")
    parser.add_argument("--test-every", type=int, default=2, help="score every n-th brain slice of subject 0002")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE",
                        help="extra config override for every method (repeatable)")
    parser.add_argument("--from-model", help="start both methods from this checkpoint ('shipped': the shipped brain "
                                             "model) with its synthesis settings (learn2synth.adapt.adapt_config)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps, few maps and test slices")
    parser.add_argument("--work", help="keep runs and prepared data here (resumable)")
    parser.add_argument("--out", default=str(common.REPO / "benchmarks" / "results" / "feature_da.md"))
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := [m for m in methods if m not in METHODS]:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if args.quick:
        args.every, args.maps, args.test_every = max(args.every, 32), min(args.maps, 3), max(args.test_every, 20)
    import torch

    from learn2synth.train_config import load_train_config

    torch.set_num_threads(args.threads)
    t0, cpu0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="exp_feature_da_") as tmp:
        work = Path(args.work or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        data_sets, test, n_synth, n_target = prepare(args, work)
        manifest = work / f"target_{args.contrast}.yaml"  # written by prepare
        extra = [f"steps={args.steps}", f"data.shape=[{args.shape},{args.shape}]", f"threads={args.threads}",
                 f"seed={args.seed}", *(QUICK_SETS if args.quick else []),
                 *(["net.channels=[8,16,32]"] if args.quick and not args.from_model else []), *args.sets]

        def build(method):
            if args.from_model:
                return adapt_config(model, manifest, sets=[*data_sets, "data.val_fraction=0", *METHODS[method], *extra])
            return load_train_config(CONFIG, [*data_sets, *METHODS[method], *extra])

        if args.from_model:
            from learn2synth.adapt import adapt_config
            from learn2synth.segment import shipped_model_path

            model = shipped_model_path() if args.from_model == "shipped" else Path(args.from_model)

        fixed = {"start": model} if args.from_model else {}  # the model as it is, scored without training
        results = common.run_methods([*fixed, *methods], build, [test], work, len(CLASSES) + 1,
                                     tag=f"seed={args.seed}", fixed=fixed)
        config = build("feature_da")
        write_report(args, argv, results, test, config, extra, n_synth, n_target, time.perf_counter() - t0,
                     time.process_time() - cpu0)
    return 0


def write_report(args, argv, results, test, config, extra, n_synth, n_target, seconds, cpu) -> None:
    out = Path(args.out)
    f = config.feature_da
    times = ", ".join(f"{r.method} {r.seconds / 60:.1f} min ({r.seconds / config.steps:.2f} s/step)" for r in results)
    lines = [
        *common.report_head(f"feature_da vs synthseg on an unseen contrast ({args.contrast}), same step budget",
                            args.quick, common.command_line(__file__, argv)),
        f"- CPU budget: {config.steps} steps per method, batch {config.batch_size} of {config.data.shape} crops, "
        f"{args.threads} thread(s) at nice 10; training time (wall) {times}; {seconds / 60:.1f} min wall and "
        f"{cpu / 60:.1f} min CPU (this process) in all, data preparation and testing included. "
        f"{common.environment()}.",
        *([f"- Both methods start from `{config.init_from}` (`learn2synth.adapt.adapt_config`: the model's network "
           "and synthesis settings; Adam lr "
           f"{config.optim.lr})."] if args.from_model else []),
        f"- Segmenter (both): MONAI U-Net {config.net.channels}, {config.net.act}, Adam lr {config.optim.lr}, "
        f"loss {config.loss}; synthesis preset `{config.synth_preset}` from {n_synth} SynthSeg label-map slices "
        f"(every {args.every}-th brain slice of {args.maps} maps, extra-cerebral labels set to background).",
        f"- feature_da: target = {n_target} coronal slices of OAS1_0001 in `{args.contrast}` "
        "(`benchmarks/experiments/contrasts.py`), unlabeled; G width "
        f"{f.g_channels} (+{f.noise_channels} noise channel), PatchDiscriminator {f.d_channels} channels x "
        f"{f.d_layers} layers; weights rec {f.rec_weight}, adv G {f.adv_weight_g}, aux G {f.aux_weight_g}, aux D "
        f"{f.aux_weight_d}, adv F {f.adv_weight_f}, aux F {f.aux_weight_f}; adversarial F terms from step "
        f"{f.adapt_from}; G/D Adam lr {f.lr_g}/{f.lr_d}, betas {f.betas}.",
        f"- Test: {len(test.cases)} coronal brain slices of OAS1_0002 in `{args.contrast}` (every "
        f"{args.test_every}-th), segmented whole by `learn2synth.inference.predict_array`.",
        f"- Overrides on top of {'the model config' if args.from_model else '`configs/experiments/brain.yaml`'}: "
        f"`{' '.join(extra)}`.", "",
        "## Volume Dice per class (headline)", "", common.volume_table(results, test.name, CLASSES), "",
        "## Per slice (Wilcoxon over slices against synthseg)", "",
        common.results_table(results, test.name, CLASSES), "",
        "## Reading", "", "(written by hand after the run)", "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
