"""brainSPADE on the shared brain data: the label generator, the SPADE image generator, and segmenters trained
only on generated pairs, against SynthSeg-style synthesis and real images, all at 64 x 64 whole coronal slices.

- Label generator (``learn2synth labelgen``): the first ``--maps`` SynthSeg label maps, coronal slices (axis 2)
  mapped to the 4 OASIS tissue classes, each padded to a square and resized to 64 x 64 (about 4 mm pixels).
- SPADE (``learn2synth spade``): OASIS subject 0001, its T1 and a T2-like copy made by the experiment
  (``contrasts.make_contrast``) as two volumes, so styles are paired within one contrast.
- Label maps: class proportions and connected components per class, sampled vs training maps.
- Feature distances (FID and KID, :mod:`learn2synth.feature_distance`): no Inception weights can be downloaded, so
  the feature network is the shipped brain tissue segmenter's encoder (every level, average pooled; images
  upsampled to 192 px, about its 1 mm training scale), between real test slices (OASIS 0002) and each image set.
- Downstream: segmenters (same net, steps and batch) trained on (a) SynthSeg-style synthesis of the training label
  maps (preset ``mild``, as exp_brain), (b) SPADE renders of label-generator samples in the T1 style of subject
  0001 slices, (c) the same in the T2-like style, (d) real T1 slices of subject 0001; tested on every 2nd brain
  slice of subject 0002 in T1 and T2-like, Dice per class over all test slices (volume Dice at 64 px).

Prints the tables and writes ``--out`` (markdown, starting with the command) and a gallery PNG beside it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import contrasts  # noqa: E402

REPO = common.REPO
AXIS = 2
MAPPING = REPO / "configs" / "mappings" / "synthseg_to_tissue4.yaml"
NAMES = ["background", "cortex", "subcortical GM", "white matter", "CSF"]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "spade_brain.md"))
    p.add_argument("--work", help="keep runs here instead of a temporary folder")
    p.add_argument("--maps", type=int, default=4, help="SynthSeg label maps for the label generator")
    p.add_argument("--ae-steps", type=int, default=1500)
    p.add_argument("--diffusion-steps", type=int, default=4000)
    p.add_argument("--spade-steps", type=int, default=3000)
    p.add_argument("--seg-steps", type=int, default=600)
    p.add_argument("--n-eval", type=int, default=128, help="label maps per set for the label statistics")
    p.add_argument("--n-generated", type=int, default=128, help="generated label maps the spade segmenters train on")
    p.add_argument("--quick", action="store_true", help="smoke run: a few steps of everything")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.maps, args.ae_steps, args.diffusion_steps, args.spade_steps, args.seg_steps, args.n_eval = 1, 4, 4, 4, 4, 8
        args.n_generated = 8
    return args


def load(path):
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj)


def save_nifti(path, array):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4)), str(path))
    return path


def prepare_oasis(data: Path, work: Path):
    """SPADE's training volumes (0001 T1 and T2-like), style slices, and the 64 px test slices of 0002."""
    from learn2synth.generative.data import crop_to, fit_image, fit_label
    from learn2synth.synth import normalize

    oasis = data / "brain" / "oasis"
    volumes = {}
    for sid in ("0001", "0002"):
        t1 = load(oasis / f"OASIS_OAS1_{sid}_MR1" / "aligned_norm.nii.gz").astype(np.float32)
        seg = load(oasis / f"OASIS_OAS1_{sid}_MR1" / "aligned_seg4.nii.gz").astype(np.int32)
        volumes[sid] = {"t1": t1, "t2": contrasts.make_contrast(t1, seg, "t2", seed=int(sid)), "seg": seg}
    folder = work / "spade_data"
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for contrast in ("t1", "t2"):
        save_nifti(folder / "images" / f"OAS1_0001_{contrast}.nii.gz", volumes["0001"][contrast])
        save_nifti(folder / "labels" / f"OAS1_0001_{contrast}.nii.gz", volumes["0001"]["seg"])
    area = (volumes["0001"]["seg"] > 0).sum(axis=(0, 1))
    middle = np.nonzero(area >= 0.5 * area.max())[0]
    style_slices = middle[np.linspace(0, len(middle) - 1, 4).astype(int)]
    styles = {c: [save_nifti(work / f"style_{c}_z{z}.nii.gz", volumes["0001"][c][:, :, z]) for z in style_slices]
              for c in ("t1", "t2")}

    def slices(sid, contrast, every):
        seg = volumes[sid]["seg"]
        area = (seg > 0).sum(axis=(0, 1))
        zs = np.nonzero(area >= 0.1 * area.max())[0][::every]
        # cropped to the image's support (the skull-stripped brain), as the generators' inputs are to the brain
        images = [normalize(torch.from_numpy(volumes[sid][contrast][None, None, :, :, z].copy()), "quantile")[0]
                  for z in zs]
        labels = [torch.from_numpy(seg[None, :, :, z].astype(np.int64)) for z in zs]
        support = [torch.from_numpy(volumes[sid]["t1"][:, :, z] > 0) for z in zs]
        xs = [fit_image(crop_to(x, m), [64, 64]) for x, m in zip(images, support, strict=True)]
        ys = [fit_label(crop_to(y, m), [64, 64], 5) for y, m in zip(labels, support, strict=True)]
        return torch.stack(xs), torch.stack(ys)

    tests = {c: slices("0002", c, 2) for c in ("t1", "t2")}
    real_0001 = slices("0001", "t1", 2)
    return folder, styles, tests, real_0001


def label_stats(maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(fraction of pixels per class, mean number of connected components per class per map)."""
    from scipy import ndimage

    maps = maps[:, 0].numpy()
    fractions = np.array([(maps == k).mean() for k in range(5)])
    components = np.array([[ndimage.label(m == k)[1] for k in range(5)] for m in maps]).mean(0)
    return fractions, components


class Features:
    """Encoder features of the shipped brain segmenter (:mod:`learn2synth.feature_distance`), images upsampled
    to 192 x 192 (about its 1 mm training scale)."""

    def __init__(self):
        from learn2synth.inference import load_model
        from learn2synth.segment import shipped_model_path

        self.net = load_model(shipped_model_path(), device="cpu").net

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from learn2synth.feature_distance import encoder_features

        size = (192, 192)
        return encoder_features(self.net, torch.nn.functional.interpolate(images, size=size, mode="bilinear",
                                                                           align_corners=False))


def distances(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(FID, KID x 1000) between feature sets."""
    from learn2synth.feature_distance import fid, kid

    return fid(a, b), 1000 * kid(a, b)[0]


def train_segmenters(args, work, labelgen_run, spade_run, styles, fitted_labels, real_0001):
    """The four segmenters of the downstream comparison; returns {name: (run folder, CPU seconds)}."""
    from learn2synth.train import train
    from learn2synth.train_config import load_train_config

    real = work / "real_0001"
    (real / "images").mkdir(parents=True, exist_ok=True)
    (real / "labels").mkdir(parents=True, exist_ok=True)
    for i, (x, y) in enumerate(zip(*real_0001, strict=True)):
        save_nifti(real / "images" / f"z{i:03d}.nii.gz", x[0].numpy())
        save_nifti(real / "labels" / f"z{i:03d}.nii.gz", y[0].numpy().astype(np.int16))
    base = [f"steps={args.seg_steps}", "batch_size=8", "real_batch_size=8", "threads=1", f"seed={args.seed}",
            "data.shape=[64,64]", "data.n_classes=5", "data.real=null", "net.channels=[16,32,64]",
            "synth.normalize=quantile", "log_every=50", "val_every=1000000", "checkpoint_every=1000000"]
    spade = ["method=spade", f"data.labels=labelgen:{labelgen_run}", f"data.phantom_count={args.n_generated}",
             f"spade.model={spade_run}"]
    configs = {
        "synthseg (mild) on training maps": ["method=synthseg", "synth_preset=mild", f"data.labels={fitted_labels}"],
        "spade, generated maps, T1 style": [*spade, f"spade.style=[{','.join(map(str, styles['t1']))}]"],
        "spade, generated maps, T2-like style": [*spade, f"spade.style=[{','.join(map(str, styles['t2']))}]"],
        "real T1 (subject 0001)": ["method=real", f"data.real={real}", "data.val_fraction=0"],
    }
    runs = {}
    for k, (name, sets) in enumerate(configs.items()):
        out = work / f"seg_{k}"
        t0 = time.process_time()
        train(load_train_config(None, [*base, *sets]), out, progress=False, tensorboard=False)
        runs[name] = (out, time.process_time() - t0)
        print(f"{name}: {runs[name][1]:.0f} s CPU", flush=True)
    return runs


def dice_table(runs, tests):
    from learn2synth.inference import load_model
    from learn2synth.metrics import dice_per_class

    rows = {}
    for name, (out, _) in runs.items():
        net = load_model(out, device="cpu").net
        for contrast, (x, y) in tests.items():
            with torch.no_grad():
                pred = torch.cat([net(c).argmax(1, keepdim=True) for c in x.split(32)])
            # all test slices as one stack: Dice per class over the whole (64 px) volume
            d = dice_per_class(pred.permute(1, 0, 2, 3)[None], y.permute(1, 0, 2, 3)[None], 5)[0]
            rows[(name, contrast)] = d.tolist()
    return rows


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(1)
    data = Path(args.data)
    command = common.command_line(__file__, argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = run(args, data, work)
    title = "# brainSPADE on the brain data (label generator, SPADE, generated-pair segmenters)"
    text = f"{title}\n\n```\n{command}\n```\n\n{report}"
    Path(args.out).write_text(text)
    print(text)
    return 0


def run(args, data: Path, work: Path) -> str:
    from learn2synth.generative.checkpoints import load_generator
    from learn2synth.generative_cmd import build_training, load_generator_config, train_generator
    from learn2synth.io import write_npz
    from learn2synth.report import save_gallery
    from learn2synth.synth import Synthesizer
    from learn2synth.train_config import load_train_config

    t0 = time.perf_counter()
    folder, styles, tests, real_0001 = prepare_oasis(data, work)
    maps = data / "brain" / "synthseg_label_maps"
    files = sorted(maps.glob("training_seg_*.nii.gz"))[: args.maps]
    chosen = work / "label_maps"  # links to the first --maps files (nothing is copied)
    chosen.mkdir(exist_ok=True)
    for f in files:
        common.link(f, chosen / f.name)
    lg_sets = [f"labels={chosen}", f"label_mapping={MAPPING}", "n_classes=5", "slice_axis=2",
               f"ae_steps={args.ae_steps}", f"diffusion_steps={args.diffusion_steps}", "threads=1",
               f"seed={args.seed}", "checkpoint_every=500", "log_every=50"]
    cpu = {}
    t_load = time.process_time()
    lg = build_training("labelgen", load_generator_config("labelgen", None, lg_sets))
    n_slices = f"{len(lg.source.usable)} (of {len(lg.source.pool.maps)}: those with brain)"
    cpu["load label maps"] = time.process_time() - t_load
    cpu["label generator"] = train_generator(lg, work / "labelgen", progress=False, resume=True)["cpu_seconds"]
    sp_sets = [f"data={folder}", "n_classes=5", "slice_axis=2", f"steps={args.spade_steps}", "threads=1",
               f"seed={args.seed}", "checkpoint_every=500", "log_every=50"]
    sp = build_training("spade", load_generator_config("spade", None, sp_sets))
    cpu["SPADE"] = train_generator(sp, work / "spade", progress=False, resume=True)["cpu_seconds"]

    # label maps: training (fitted like the generator's inputs) vs sampled
    g = torch.Generator().manual_seed(args.seed)
    train_maps = lg.source.batch(args.n_eval, g)
    model = load_generator(work / "labelgen", "labelgen")
    t_sample = time.process_time()
    sampled = torch.cat([model.sample(min(32, args.n_eval - k), g) for k in range(0, args.n_eval, 32)])
    cpu[f"sample {args.n_eval} label maps (DDIM {model.config.sample_steps} steps)"] = time.process_time() - t_sample
    fitted = work / "fitted_labels"
    fitted.mkdir(exist_ok=True)
    for i, m in enumerate(lg.source.batch(256 if not args.quick else 8, g)):
        write_npz(fitted / f"map_{i:03d}.npz", {"label": m[0].numpy().astype(np.int16)})
    (f_train, c_train), (f_gen, c_gen) = label_stats(train_maps), label_stats(sampled)

    # images and feature distances
    renderer = load_generator(work / "spade", "spade")
    from learn2synth.generative.data import read_style_image

    codes = {c: torch.cat([renderer.style(read_style_image(p, renderer.config))[0] for p in styles[c]])
             for c in styles}
    n = len(tests["t1"][0])

    def render(label_maps, contrast):
        z = codes[contrast][torch.arange(len(label_maps)) % len(codes[contrast])]
        with torch.no_grad():
            return renderer.decode(label_maps, z)

    synth = Synthesizer(load_train_config(None, ["synth_preset=mild", "synth.normalize=quantile"]).synth)
    with torch.no_grad():
        synthetic = synth(train_maps[:n], g).image
    features = Features()
    reference = {c: features(tests[c][0]) for c in tests}
    sets = {
        "real T1, subject 0001": ("t1", real_0001[0]),
        "SPADE T1 style, training label maps": ("t1", render(train_maps[:n], "t1")),
        "SPADE T1 style, sampled label maps": ("t1", render(sampled[:n], "t1")),
        "SynthSeg-style (mild), training label maps": ("t1", synthetic),
        "SPADE T2-like style, training label maps": ("t2", render(train_maps[:n], "t2")),
        "SPADE T2-like style, sampled label maps": ("t2", render(sampled[:n], "t2")),
        "real T1 (subject 0002) against its T2-like copy": ("t2", tests["t1"][0]),
    }
    fd = {name: distances(features(images), reference[c]) for name, (c, images) in sets.items()}

    gallery = Path(args.out).with_suffix(".png")
    rows = {"training label maps": train_maps[:6], "sampled label maps": sampled[:6],
            "sampled, SPADE T1 style": render(sampled[:6], "t1"), "sampled, SPADE T2-like style":
            render(sampled[:6], "t2"), "one sampled map, 4 T1 + T2 styles":
            torch.cat([render(sampled[:1].expand(3, -1, -1, -1), "t1")[:3],
                       render(sampled[:1].expand(3, -1, -1, -1), "t2")[:3]]),
            "real test T1 (0002)": tests["t1"][0][::max(1, n // 6)][:6]}
    save_gallery(gallery, {k: [a[0].float().numpy() for a in v] for k, v in rows.items()})

    runs = train_segmenters(args, work, work / "labelgen", work / "spade", styles, fitted, real_0001)
    dice = dice_table(runs, tests)
    return report(args, cpu, runs, n_slices, files, (f_train, c_train, f_gen, c_gen), fd, dice, n, gallery,
                  time.perf_counter() - t0)


def report(args, cpu, runs, n_slices, files, stats, fd, dice, n_test, gallery, wall) -> str:
    f_train, c_train, f_gen, c_gen = stats
    lines = [f"Label generator: {len(files)} SynthSeg maps ({', '.join(f.name for f in files)}) -> {n_slices} "
             f"coronal slices, 64 x 64; {args.ae_steps} autoencoder + {args.diffusion_steps} diffusion steps. "
             f"SPADE: OASIS 0001 T1 + T2-like, {args.spade_steps} steps. Segmenters: {args.seg_steps} steps each, "
             f"batch 8, UNet [16, 32, 64]. One thread, on a 2-core machine shared with other jobs (wall time of "
             f"this invocation {wall / 60:.0f} min; the CPU table counts generator runs resumed or reused from "
             "`--work` in full).", "",
             "## CPU time (process time, one thread)", "", "| part | CPU s |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in cpu.items()]
    lines += [f"| segmenter: {k} | {v[1]:.0f} |" for k, v in runs.items()]
    lines += ["", f"## Label maps: {args.n_eval} sampled vs {args.n_eval} training maps", "",
              "| class | pixel fraction, training | sampled | components per map, training | sampled |",
              "|---|---|---|---|---|"]
    lines += [f"| {NAMES[k]} | {f_train[k]:.3f} | {f_gen[k]:.3f} | {c_train[k]:.1f} | {c_gen[k]:.1f} |"
              for k in range(5)]
    lines += ["", f"## Feature distance to real test slices (OASIS 0002, n = {n_test} per set)", "",
              "FID and KID (x 1000) of the shipped brain segmenter's encoder features (every level, average pooled; "
              "learn2synth.feature_distance); lower is closer. Sets of the same size; the first row is the "
              "real-vs-real floor for T1.", "",
              "| image set | reference | FID | KID x 1000 |", "|---|---|---|---|"]
    lines += [f"| {k} | {'T2-like 0002' if 'T2' in k else 'T1 0002'} | {v[0]:.3g} | {v[1]:.3g} |"
              for k, v in fd.items()]
    lines += ["", f"## Downstream: Dice on OASIS 0002 ({n_test} slices at 64 px, Dice over the stack)", "",
              "| trained on | test | " + " | ".join(NAMES[1:]) + " | mean |", "|---|---|---|---|---|---|---|"]
    for (name, contrast), d in dice.items():
        lines.append(f"| {name} | {contrast.upper()} | " + " | ".join(f"{v:.3f}" for v in d)
                     + f" | {np.mean(d):.3f} |")
    lines += ["", f"Gallery: [{gallery.name}]({gallery.name}).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
