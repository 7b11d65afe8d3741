"""gan_synth on OASIS against synthseg and real at the same segmenter step budget (a small CPU run).

- Real training data: K brain-containing coronal slices (axis 2) of OASIS subject 0001, picked as in
  ``exp_brain.py`` (its ``prepare_direction``; ``synthseg_slices`` makes the SynthSeg label-map slices, non-brain
  labels set to 0, that synthseg renders with ``configs/experiments/brain.yaml``).
- gan_synth: ``gan.pretrain_steps`` GAN-only steps on those K pairs, then the segmenter's steps; synthseg and real
  take the same number of segmenter steps (the GAN's steps come on top and are reported as CPU time).
- Test: every ``--test-every``-th brain slice of subject 0002, segmented whole; headline: Dice per class over the
  stacked slices (volume Dice), with per-slice Dice and a Wilcoxon test against synthseg.

    python benchmarks/experiments/exp_gan.py --data ../shared/data

Writes ``benchmarks/results/gan_synth.md`` (``--out`` to change) and a gallery of the GAN's images beside it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import exp_brain  # noqa: E402

# the setting gan_synth.md was made in (exp_brain.py has since moved to brain_tissue.yaml and unstripped maps)
CONFIG = common.REPO / "configs" / "experiments" / "brain.yaml"
# the segmenter's budget and the crop size are the same for every method; only these sets differ
METHODS = {"synthseg": ["method=synthseg"], "real": ["method=real"], "gan_synth": ["method=gan_synth"],
           "gan_synth-clipped": ["method=gan_synth", "gan.realism=clipped_bce"],
           "gan_synth-nogate": ["method=gan_synth", "gan.realism_weight=false"]}
BUDGET = ["steps=300", "data.shape=[64,64]", "batch_size=8", "real_batch_size=8", "gan.pretrain_steps=200",
          "gan.epoch_steps=50", "gan.alpha=0.5"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="the shared data folder (read only)")
    parser.add_argument("--k", type=int, default=20, help="number of real labeled training slices of subject 0001")
    parser.add_argument("--maps", type=int, default=2, help="SynthSeg label maps for the synthseg method")
    parser.add_argument("--every", type=int, default=8, help="keep every n-th brain slice of each SynthSeg map")
    parser.add_argument("--test-every", type=int, default=2, help="score every n-th brain slice of subject 0002")
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE",
                        help="extra config override for every method (repeatable)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="run only these (default: all)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; each method runs once per seed")
    parser.add_argument("--out", default=str(common.REPO / "benchmarks" / "results" / "gan_synth.md"))
    parser.add_argument("--work", help="keep runs and prepared data here instead of a temporary folder")
    args = parser.parse_args(argv)
    command = common.command_line(__file__, argv)
    import torch

    from learn2synth.io import load_label_mapping
    from learn2synth.train_config import load_train_config

    torch.set_num_threads(1)
    cpu0, t0 = time.process_time(), time.perf_counter()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="exp_gan_")
    work = Path(args.work or tmp.name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve()
    synth_files = exp_brain.synthseg_slices(data, work / "synthseg_slices", args.every, args.maps,
                                            load_label_mapping(exp_brain.MAPPING), strip=True)
    n_synth = len(synth_files)
    sets_by_k, tests = exp_brain.prepare_direction(data, work, [args.k], synth_files, "0001", "0002", args.test_every)
    data_sets, picks = sets_by_k[args.k]
    extra = [*BUDGET, "threads=1", *args.sets]
    seeds = [int(v) for v in args.seeds.split(",")]

    def build(method, seed=seeds[0]):
        config = load_train_config(CONFIG, [*data_sets, *METHODS[method], *extra, f"seed={seed}"])
        if method.startswith("gan_synth"):  # the same segmenter steps after the GAN's
            config.steps += config.gan.pretrain_steps
        return config

    configs = {m: build(m) for m in METHODS}
    results, cpu = [], {}
    for seed in seeds:
        for method in args.methods:
            c0 = time.process_time()
            tag = f"K={args.k}" if len(seeds) == 1 else f"K={args.k} seed={seed}"
            results += common.run_methods([method], lambda m, seed=seed: build(m, seed), tests[:1], work,
                                          n_classes=5, tag=tag)
            cpu[method] = cpu.get(method, 0.0) + time.process_time() - c0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    first = next(r for r in results if r.method == "gan_synth") if "gan_synth" in args.methods else None
    run = work / "runs" / f"{first.tag}_gan_synth".replace("=", "") if first else None
    gallery = gan_gallery(run, tests[0], Path(args.out).with_suffix(".png")) if run else None
    scores = discriminator_table(run, tests[0]) if run else "(gan_synth not run)"
    distances = feature_table(run, tests[0], configs["synthseg"]) if run else "(gan_synth not run)"
    print(scores, distances, sep="\n\n")
    total_cpu, total = time.process_time() - cpu0, time.perf_counter() - t0
    write_report(Path(args.out), results, tests[0], configs, cpu, total_cpu, total, command, args, picks, n_synth,
                 extra, gallery, work, scores, distances)
    if tmp is not None:
        tmp.cleanup()
    print(f"wrote {args.out} ({total_cpu:.0f} s CPU, {total:.0f} s wall)")
    return 0


def gan_gallery(run: Path, test, path: Path) -> Path:
    """Generated images of four test label maps (subject 0002, never seen by the GAN) beside the real ones."""
    import torch

    from learn2synth.gan_cmd import load_gan
    from learn2synth.report import save_gallery
    from learn2synth.synth.normalize import normalize

    gan, config = load_gan(str(run))
    n = len(test.cases)
    picks = [n // 5, 2 * n // 5, 3 * n // 5, 4 * n // 5]
    generator = torch.Generator().manual_seed(0)
    labels = [torch.from_numpy(test.labels[i]).long()[None, None] for i in picks]
    with torch.no_grad():
        fake = [gan.generate(y, generator)[0, 0].numpy().T for y in labels]
    real = [normalize(torch.from_numpy(test.images[i])[None, None], config.synth.normalize)[0, 0].numpy().T
            for i in picks]
    return save_gallery(path, {"generated (subject 0002 labels)": fake, "real": real},
                        predictions={"label map": [y[0, 0].numpy().T for y in labels]})


def discriminator_table(run: Path, test) -> str:
    """The trained discriminator's per-image scores on held-out pairs (subject 0002's slices, whole): the real
    image and the GAN's image of its label map. Per image: the mean patch logit and the mean patch BCE against
    "real"; quantiles over the slices, the share with BCE < 1 (a non-zero ``clipped_bce`` realism) and the mean
    percentile of a generated image's logit among the real images' logits (0.5 if the discriminator can't tell)."""
    import torch

    from learn2synth.gan_cmd import load_gan
    from learn2synth.generative.pix2pix import _adversarial_loss, image_scores, percentile
    from learn2synth.report import markdown_table
    from learn2synth.synth.normalize import normalize

    gan, config = load_gan(str(run))
    generator, bce = torch.Generator().manual_seed(0), _adversarial_loss("none")
    logits, losses = {"real": [], "generated": []}, {"real": [], "generated": []}
    with torch.no_grad():
        for image, labels in zip(test.images, test.labels, strict=True):
            y = torch.from_numpy(labels).long()[None, None]
            x = normalize(torch.from_numpy(image)[None, None].float(), config.synth.normalize)
            for kind, img in (("real", x), ("generated", gan.generate(y, generator))):
                d = gan.discriminate(y, img)
                logits[kind].append(float(image_scores(d)[0]))
                losses[kind].append(float(bce(d, target_is_real=True, for_discriminator=False)[0].mean()))
    rows = []
    for kind in logits:
        z, b = torch.tensor(logits[kind]), torch.tensor(losses[kind])
        q = lambda t: " / ".join(f"{float(v):.2f}" for v in torch.quantile(t, torch.tensor([0.1, 0.5, 0.9])))  # noqa: E731
        rows.append([kind, len(z), f"{float(z.mean()):.2f} ± {float(z.std()):.2f}", q(z), q(b),
                     f"{float((b < 1).float().mean()):.2f}"])
    share = float(percentile(torch.tensor(logits["generated"]), torch.tensor(logits["real"])).mean())
    return (markdown_table(["images", "n", "mean logit (mean ± sd)", "logit 10% / 50% / 90%",
                            "BCE vs real 10% / 50% / 90%", "share with BCE < 1"], rows)
            + f"\n\nMean percentile of a generated image's logit among the real images' logits: {share:.3f}.")


def feature_table(run: Path, test, synthseg_config) -> str:
    """FID and KID (learn2synth.feature_distance, the shipped brain model's encoder) between the real images of
    one half of the test slices (every other slice) and images of the other half: real, GAN-generated from their
    label maps, and SynthSeg-style renders of the same label maps (the synthseg method's synthesis). Every image
    is quantile-normalized, as the shipped model's training images were."""
    import torch

    from learn2synth.feature_distance import encoder_features, fid, kid
    from learn2synth.gan_cmd import load_gan
    from learn2synth.inference import load_model
    from learn2synth.report import markdown_table
    from learn2synth.segment import shipped_model_path
    from learn2synth.synth import Synthesizer
    from learn2synth.synth.normalize import normalize

    gan, _ = load_gan(str(run))
    net = load_model(shipped_model_path(), device="cpu").net
    stride = 16
    ref_idx, other = list(range(0, len(test.images), 2)), list(range(1, len(test.images), 2))
    n = min(len(ref_idx), len(other))
    ref_idx, other = ref_idx[:n], other[:n]

    def crop(x):  # whole slices, cropped to a multiple of the network's stride
        h, w = (d // stride * stride for d in x.shape[-2:])
        return x[..., :h, :w]

    def batch(arrays, labels=False):
        return crop(torch.stack([torch.from_numpy(a)[None] for a in arrays]).to(torch.long if labels else torch.float))

    real = batch([test.images[i] for i in other])
    labels = batch([test.labels[i] for i in other], labels=True)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sets = {"real (other slices of subject 0002)": real,
                "GAN, from those slices' label maps": gan.generate(labels, generator),
                f"SynthSeg-style (preset {synthseg_config.synth_preset}), same label maps":
                    Synthesizer(synthseg_config.synth)(labels, generator=generator).image}
    reference = encoder_features(net, normalize(batch([test.images[i] for i in ref_idx]), "quantile"))
    rows = []
    for name, images in sets.items():
        features = encoder_features(net, normalize(images, "quantile"))
        k, k_sd = kid(features, reference)
        rows.append([name, n, f"{fid(features, reference):.3g}", f"{1000 * k:.3g} ± {1000 * k_sd:.2g}"])
    return markdown_table(["image set", "n", "FID", "KID x 1000 (± sd over subsets)"], rows)


def gan_logs(run: Path) -> dict:
    """From a gan_synth run's metrics.csv: the last GAN L1, the mean realism and synthetic weight once non-zero."""
    import csv

    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("gan_l1") or r.get("realism")]
    weighted = [r for r in rows if r.get("realism")]
    l1 = [float(r["gan_l1"]) for r in rows if r.get("gan_l1") and not r.get("loss_seg")]
    mean = lambda k: sum(float(r[k]) for r in weighted) / len(weighted) if weighted else float("nan")  # noqa: E731
    return {"gan_l1": l1[-1] if l1 else float("nan"), "realism": mean("realism"), "synth_weight": mean("synth_weight")}


def gan_table(work: Path, results) -> str:
    from learn2synth.report import markdown_table

    rows = []
    for r in results:
        if r.method.startswith("gan_synth"):
            logs = gan_logs(work / "runs" / f"{r.tag}_{r.method}".replace("=", ""))
            rows.append([r.method, logs["gan_l1"], logs["realism"], logs["synth_weight"]])
    return markdown_table(["method", "GAN L1 (end of GAN phase)", "mean realism", "mean synthetic weight"], rows)


def write_report(out: Path, results, test, configs, cpu, total_cpu, total, command, args, picks, n_synth, extra,
                 gallery, work: Path, scores: str, distances: str) -> None:
    c, g = configs["gan_synth"], configs["gan_synth"].gan
    segmenter_steps = configs["real"].steps
    classes = exp_brain.CLASSES
    lines = [
        *common.report_head("gan_synth on OASIS: GAN-synthesized pairs vs synthseg and real, same segmenter steps",
                            False, command),
        f"CPU budget: {total_cpu / 60:.1f} min of CPU in total ({total / 60:.1f} min wall), one thread at nice 10; "
        "per method (training + scoring): " + ", ".join(f"{m} {s:.0f} s" for m, s in cpu.items()) + f". "
        f"{common.environment()}.", "",
        "## Setting",
        f"- Real training pairs: K = {args.k} coronal slices of OASIS subject 0001 (axis-2 indices {picks}).",
        f"- Every method: MONAI U-Net {c.net.channels}, Adam lr {c.optim.lr}, loss {c.loss}, "
        f"**{segmenter_steps} segmenter steps** of batch {c.batch_size} (real batch {c.real_batch_size}), random "
        f"{c.data.shape} crops.",
        f"- synthseg: preset `{c.synth_preset}` on {n_synth} SynthSeg label-map slices ({args.maps} maps, every "
        f"{args.every}-th slice) plus the K real label maps. real: the K pairs, mild random deformation.",
        f"- gan_synth: **{g.pretrain_steps} GAN steps first** (pix2pix: U-Net {g.generator_channels}, PatchGAN "
        f"{g.discriminator_channels} channels x {g.discriminator_layers} layers, BCE + {g.l1_weight:g} L1, Adam "
        f"{g.lr:g}), then {c.steps - g.pretrain_steps} segmenter steps: a real batch + {c.batch_size} GAN images of "
        f"composed real label maps, weighted alpha * log(t + 1) * realism (`gan.realism={g.realism}`) with alpha "
        f"{g.alpha}, an epoch t = "
        f"{g.epoch_steps} steps, GAN frozen. Its `steps` = GAN steps + segmenter steps. gan_synth-nogate: the same "
        "without the realism factor (`gan.realism_weight=false`: weight alpha * log(t + 1)), an ablation; "
        "gan_synth-clipped: the first, absolute realism `1 - min(BCE vs real, 1)` (`gan.realism=clipped_bce`).",
        f"- Test: {len(test.cases)} brain slices of subject 0002 (every {args.test_every}-th), segmented whole.",
        f"- Overrides on top of `configs/experiments/brain.yaml`: `{' '.join(extra)}`; gan_synth's steps are "
        f"raised by its GAN steps (`steps={c.steps}`).", "",
        f"## {test.name}", "", "Volume Dice over seeds (the headline):", "", common.summary_table(results, test.name),
        "", "Volume Dice per class (the slices stacked):", "",
        common.volume_table(results, test.name, classes), "", "Per slice (Wilcoxon against synthseg):", "",
        common.results_table(results, test.name, classes), "",
        "## What the GAN runs logged (metrics.csv)", "",
        "GAN L1 to the real image at the end of its phase; over the segmenter phase after the first epoch: mean "
        "realism of the synthetic images and mean weight of their loss.", "", gan_table(work, results), "",
        "## The discriminator's scores on held-out pairs (end of the run)", "",
        "Subject 0002's slices, real and generated from their label maps; per image the mean patch logit and BCE.",
        "", scores, "",
        "## Image quality: feature distances to real held-out slices", "",
        "Reference: the real images of every other test slice of subject 0002; each set is made from the other "
        "slices. Features: the shipped brain model's encoder (every level, average pooled; "
        "`learn2synth.feature_distance`; Inception weights cannot be downloaded here). The real row is the floor "
        "(different anatomy, same scanner).", "", distances, "",
        "## The GAN's images", "", f"![GAN gallery]({gallery.name if gallery else ''})", "",
        "Generated from subject 0002's label maps (the GAN saw only subject 0001's K slices), above the real slices "
        "of those label maps.", "",
        "## Reading", "", "(written by hand after the run)", "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
