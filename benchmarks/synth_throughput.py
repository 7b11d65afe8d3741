"""Images per second of learn2synth's synthesis engine against cornucopia and TorchIO, on the same label maps.

Contenders, each timed on the same procedural label maps (:func:`learn2synth.synth.phantom_labels`):

- ``ours_synthseg``: ``Synthesizer()``, the default config (SynthSeg's training defaults), one batched call.
- ``ours_matched``: our pipeline with settings matched to cornucopia's defaults (:func:`cornucopia_matched_config`).
- ``cornucopia``: ``cornucopia.SynthFromLabelTransform()`` with its defaults.
- ``torchio``: ``tio.Compose`` of RandomElasticDeformation, RandomLabelsToImage, RandomBiasField, RandomBlur and
  RandomNoise, all with their defaults.

cornucopia and TorchIO transform one image per call (that is how they are used), so they are looped over the
batch; ours renders the whole batch in one call. Cases: 2D 256x256 batch 8 and 3D 96^3 batch 2, with
``torch.set_num_threads(2)`` (and SimpleITK, which TorchIO's elastic deformation uses, set to 2 threads too).
After warm-up (single-image calls), every repetition times one batch of each contender, in an order that rotates
between repetitions, so slow drifts in machine load hit all contenders alike; the table reports the median and
the best batch (bursts from other processes slow the many-small-op libraries far more than ours, and the best
batch is the least affected). A missing library is reported and its column skipped. ``--quick`` warms up on a
crop, stops repeating after ~20 s per case and times cornucopia and TorchIO on one label map per call (their
images/s does not depend on the batch).

Usage::

    .venv/bin/python benchmarks/synth_throughput.py            # full run, writes benchmarks/results/synth_throughput.md
    .venv/bin/python benchmarks/synth_throughput.py --quick    # about a minute at most; prints, writes nothing
    .venv/bin/python benchmarks/synth_throughput.py --json     # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import random
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from learn2synth.synth import SynthConfig, Synthesizer, phantom_labels

CASES = {"2d": ((256, 256), 8), "3d": ((96, 96, 96), 2)}
CONTENDERS = ("ours_synthseg", "ours_matched", "cornucopia", "torchio")
PER_IMAGE = ("cornucopia", "torchio")  # one label map per call, looped over the batch
LABELS = {
    "ours_synthseg": "ours (synthseg preset)",
    "ours_matched": "ours (cornucopia-matched)",
    "cornucopia": "cornucopia SynthFromLabelTransform",
    "torchio": "TorchIO pipeline",
}
RESULTS = Path(__file__).resolve().parent / "results" / "synth_throughput.md"
KEEP = "<!-- Everything below this line is kept when the benchmark rewrites this file. -->"
THREADS = 2
FWHM_TO_SIGMA = 1 / (2 * math.sqrt(2 * math.log(2)))

# What ours_matched still does differently from cornucopia's SynthFromLabelTransform() (cornucopia 0.5).
MATCHED_DIFFERENCES = (
    "elastic field: linear interpolation of a fixed 6-point-per-axis Gaussian control grid (std drawn up to "
    "5% of the field of view / sqrt(3)); cornucopia draws 2-10 control points per axis, uniform values up to "
    "5% of the field of view, and interpolates them with cubic splines",
    "GMM: one smoothed noise field shared by all classes (sigma = FWHM 5 voxels, cornucopia's mean) and a "
    "random background intensity; cornucopia smooths one noise field per class with its own FWHM in [0, 10] "
    "and keeps the background at 0",
    "bias field: exp of a linearly interpolated Gaussian log-field (std up to 0.5 / sqrt(3), 4.5 control "
    "points across the image); cornucopia multiplies by a cubic-spline field in 1 +/- U(0, 0.5) with 2-7 "
    "control points per axis",
    "noise: chi noise with a fixed 5 degrees of freedom, added after resampling; cornucopia draws 2-8 channels, "
    "adds the noise on the low-resolution lattice and modulates it by a smooth random g-factor field",
    "no motion/PSF blur (cornucopia: Gaussian FWHM in [0, 3] voxels)",
    "quantile normalization clips to [0, 1]; cornucopia's QuantileTransform does not clip",
)


def cornucopia_matched_config(shape) -> SynthConfig:
    """Our pipeline set as close as it gets to ``cornucopia.SynthFromLabelTransform()`` defaults.

    Read from cornucopia 0.5's ``synth.py``: rotation 15 deg, zooms 0.15, shears 0.012, translations 10% of the
    field of view; elastic displacement up to 5% of the field of view on 2-10 control points; GMM means
    U(0, 1), stds U(0, 0.05), within-class smoothing FWHM U(0, 10); bias 1 +/- U(0, 0.5) on 2-7 control points;
    gamma LogNormal(0, 0.6); resolution U(1, 8), thick-slice or isotropic; chi noise with sd U(0, 0.1) and
    2-8 channels; quantile normalization (1%, 99%). What cannot be matched is listed in ``MATCHED_DIFFERENCES``.
    """
    n = max(shape)
    config = SynthConfig()
    d = config.deform
    d.rotation, d.scaling, d.shear, d.translation = 15.0, 0.15, 0.012, 0.1
    d.elastic_std = 0.05 * n / math.sqrt(3)  # uniform control values in [-dmax, dmax] have std dmax / sqrt(3)
    d.elastic_points = 6 / n  # mean of RandInt(2, 10) control points per axis
    config.gmm.mean, config.gmm.std = [0.0, 1.0], [0.0, 0.05]
    config.gmm.smooth = 5 * FWHM_TO_SIGMA  # mean of the FWHM U(0, 10), as a Gaussian sigma
    config.bias.std = 0.5 / math.sqrt(3)  # log(1 +/- v) ~ +/- v, uniform in [-0.5, 0.5] at most
    config.bias.scale = 4.5 / n  # mean of RandInt(2, 7) control points
    config.gamma.std = 0.6
    r = config.resolution
    r.max_res_iso, r.max_res_aniso, r.prob_iso = 8.0, 8.0, 0.5
    config.noise.enabled, config.noise.kind, config.noise.dof, config.noise.std = True, "chi", 5, [0.0, 0.1]
    config.normalize = "quantile"
    return config


def describe_matched(shape) -> str:
    """One line with the settings of :func:`cornucopia_matched_config` for ``shape``."""
    c = cornucopia_matched_config(shape)
    d, r, n = c.deform, c.resolution, c.noise
    return (f"rotation {d.rotation:g} deg, scaling {d.scaling:g}, shear {d.shear:g}, translation {d.translation:g}; "
            f"elastic std up to {d.elastic_std:.2f} voxels on {round(d.elastic_points * max(shape))} control points "
            f"per axis; GMM means U({c.gmm.mean[0]:g}, {c.gmm.mean[1]:g}), stds U({c.gmm.std[0]:g}, "
            f"{c.gmm.std[1]:g}), texture sigma {c.gmm.smooth:.2f} voxels; bias std up to {c.bias.std:.3f} on "
            f"{c.bias.scale * max(shape):g} control points; log-gamma std {c.gamma.std:g}; voxel size up to "
            f"{r.max_res_iso:g} (isotropic) / {r.max_res_aniso:g} (one axis), {r.prob_iso:g} each; {n.kind} noise, "
            f"{n.dof} dof, sd U({n.std[0]:g}, {n.std[1]:g}); {c.normalize} normalization")


def _import(name: str):
    """The module, or None if it is not installed (its column is then skipped)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def make_contenders(shape, generator: torch.Generator) -> tuple[dict[str, Callable], dict[str, str]]:
    """Callables ``fn(labels)`` rendering one batch (B, 1, *shape), and the reasons for any left out."""
    ours = Synthesizer()
    matched = Synthesizer(cornucopia_matched_config(shape))
    contenders = {
        "ours_synthseg": lambda labels: ours(labels, generator=generator),
        "ours_matched": lambda labels: matched(labels, generator=generator),
    }
    missing = {}
    cc = _import("cornucopia")
    if cc is None:
        missing["cornucopia"] = "cornucopia is not installed (pip install -c constraints.txt cornucopia)"
    else:
        synth = cc.SynthFromLabelTransform()
        # one (1, *shape) label map per call, as cornucopia is used; it draws from torch's global RNG
        contenders["cornucopia"] = lambda labels: [synth(item) for item in labels]
    tio = _import("torchio")
    if tio is None:
        missing["torchio"] = "torchio is not installed (pip install -c constraints.txt torchio)"
    else:
        sitk = _import("SimpleITK")
        if sitk is not None:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(THREADS)
        two_d = len(shape) == 2
        pipeline = tio.Compose([
            # TorchIO images are (C, W, H, D): a 2D image is (1, H, W, 1) and must not move along the last axis
            tio.RandomElasticDeformation(max_displacement=(7.5, 7.5, 0) if two_d else 7.5),
            tio.RandomLabelsToImage(label_key="label", image_key="image"),
            tio.RandomBiasField(),
            tio.RandomBlur(),
            tio.RandomNoise(),
        ])

        def run_torchio(labels):
            out = []
            for item in labels:
                label = tio.LabelMap(tensor=item.unsqueeze(-1) if two_d else item)
                out.append(pipeline(tio.Subject(label=label))["image"].data)
            return out

        contenders["torchio"] = run_torchio
    return contenders, missing


def time_contenders(contenders: dict[str, Callable], inputs: dict[str, torch.Tensor], reps: int, warmup: int,
                    warmup_input: torch.Tensor, budget: float = math.inf) -> dict:
    """Seconds per call for each contender on its input, over ``reps`` interleaved timed calls.

    Warm-up: ``warmup`` untimed calls on ``warmup_input`` (one label map), enough to pay one-off costs
    (first-touch allocations, lazy initialization) without spending a whole slow batch on it. No repetition
    starts once ``budget`` seconds have passed (at least one always runs): keeps ``--quick`` short under load.
    """
    names = list(contenders)
    start_all = time.perf_counter()
    with torch.no_grad():
        for name in names:
            for _ in range(warmup):
                contenders[name](warmup_input)
        times = {name: [] for name in names}
        for rep in range(reps):
            if rep and time.perf_counter() - start_all > budget:
                break
            for name in names[rep % len(names) :] + names[: rep % len(names)]:  # rotate the order
                start = time.perf_counter()
                contenders[name](inputs[name])
                times[name].append(time.perf_counter() - start)
    return times


def run_benchmark(cases: dict | None = None, reps: int = 5, warmup: int = 1, seed: int = 0,
                  budget: float = math.inf, per_image_limit: int | None = None, warmup_crop: int | None = None,
                  log: Callable[[str], None] | None = None) -> dict:
    """Time every contender on every case; return raw times, images/s and the ratios ours / theirs.

    ``cases`` maps a case name ("2d", "3d") to ``(shape, batch)``. ``budget``: seconds per case after which no
    repetition starts. ``per_image_limit``: time the one-image-per-call libraries on that many label maps of
    the batch only (their images/s does not depend on the batch; ours always renders the whole batch).
    ``warmup_crop``: warm up on a crop of that size instead of a full label map. Flat keys:
    ``ips_<contender>_<case>`` (images per second, None if skipped), ``ratio_vs_<lib>_<case>``
    (ours_synthseg / lib) and ``ratio_matched_vs_<lib>_<case>`` (ours_matched / lib), None when missing.
    """
    cases = CASES if cases is None else cases
    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)  # cornucopia and TorchIO draw from the global RNGs
    random.seed(seed)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "reps": reps, "warmup": warmup,
              "warmup_crop": warmup_crop, "versions": {}, "missing": {}, "cases": {}}
    for lib in ("cornucopia", "torchio"):
        module = _import(lib)
        result["versions"][lib] = getattr(module, "__version__", "?") if module is not None else None
    for case, (shape, batch) in cases.items():
        generator = torch.Generator().manual_seed(seed)
        labels = phantom_labels(batch, shape, generator=generator)
        contenders, missing = make_contenders(shape, generator)
        result["missing"].update(missing)
        if log:
            log(f"{case}: {tuple(shape)} x {batch}, contenders {', '.join(contenders)}")
        images = {name: min(batch, per_image_limit) if name in PER_IMAGE and per_image_limit else batch
                  for name in contenders}
        inputs = {name: labels[: images[name]] for name in contenders}
        crop = (slice(0, 1), slice(None)) + (slice(0, warmup_crop),) * len(shape)
        warmup_input = labels[crop] if warmup_crop else labels[:1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # library deprecation chatter would flood the report
            times = time_contenders(contenders, inputs, reps, warmup, warmup_input, budget)
        # seconds per batch (scaled up when a per-image library was timed on part of the batch)
        seconds = {name: statistics.median(t) * batch / images[name] for name, t in times.items()}
        best = {name: min(t) * batch / images[name] for name, t in times.items()}
        result["cases"][case] = {"shape": list(shape), "batch": batch, "times": times, "images_timed": images,
                                 "median_seconds": seconds, "best_seconds": best}
        for name in CONTENDERS:
            result[f"ips_{name}_{case}"] = batch / seconds[name] if name in seconds else None
        for lib in ("cornucopia", "torchio"):
            theirs = result[f"ips_{lib}_{case}"]
            for ours, prefix in (("ours_synthseg", "ratio_vs"), ("ours_matched", "ratio_matched_vs")):
                mine = result[f"ips_{ours}_{case}"]
                result[f"{prefix}_{lib}_{case}"] = mine / theirs if theirs else None
    return result


def format_table(result: dict) -> str:
    """Markdown table: batch times, images/s and our synthseg pipeline's speed relative to each contender.

    Ratios from the medians (the headline) and from the best batch of each contender (least disturbed by other
    processes; on a loaded machine the libraries with many small ops slow down far more than ours).
    """
    lines = ["| case | contender | s / batch, median | s / batch, best | images / s (median) | "
             "ours (synthseg) / this, median | ours (synthseg) / this, best |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for case, info in result["cases"].items():
        where = f"{case} {'x'.join(map(str, info['shape']))}, batch {info['batch']}"
        med, best = info["median_seconds"], info["best_seconds"]
        for name in CONTENDERS:
            if name not in med:
                lines.append(f"| {where} | {LABELS[name]} | skipped | skipped | skipped | - | - |")
                continue
            lines.append(f"| {where} | {LABELS[name]} | {med[name]:.3f} | {best[name]:.3f} | "
                         f"{info['batch'] / med[name]:.2f} | {med[name] / med['ours_synthseg']:.1f}x | "
                         f"{best[name] / best['ours_synthseg']:.1f}x |")
    return "\n".join(lines)


def _timing_line(result: dict) -> str:
    """How the times were taken: calls per contender (fewer than asked when a time budget cut the run short)."""
    counts = sorted({len(t) for c in result["cases"].values() for t in c["times"].values()})
    calls = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    partial = sorted({f"{n} of {c['batch']}" for c in result["cases"].values()
                      for n in c["images_timed"].values() if n < c["batch"]})
    warm = "one label map" + (f" cropped to {result['warmup_crop']} voxels" if result.get("warmup_crop") else "")
    text = (f"- {calls} timed call(s) per contender and case, median reported, after {result['warmup']} untimed "
            f"warm-up call(s) on {warm}; contenders interleaved, order rotated every repetition.")
    if partial:
        text += (f" cornucopia and TorchIO were timed on {', '.join(partial)} label maps per call and scaled to the "
                 "batch (they process one image per call).")
    return text


def format_report(result: dict, command: str, load: tuple) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v) or "no comparison library"
    lines = [
        "# Synthesis throughput: learn2synth vs cornucopia vs TorchIO",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- torch {result['torch']}, {versions}; torch threads: {result['threads']} (SimpleITK: {THREADS}); "
        f"CPUs: {os.cpu_count()}; load average at start / end: {load[0]:.2f} / {load[1]:.2f} (shared machine)",
        _timing_line(result),
        "",
        format_table(result),
        "",
    ]
    targets = [f"{case} {result[f'ratio_vs_cornucopia_{case}']:.1f}x (best batches: "
               f"{c['best_seconds']['cornucopia'] / c['best_seconds']['ours_synthseg']:.1f}x)"
               for case, c in result["cases"].items() if result.get(f"ratio_vs_cornucopia_{case}")]
    if targets:
        lines += [f"Target ours (synthseg) >= 5x cornucopia defaults: {'; '.join(targets)}.", ""]
    for lib, reason in result["missing"].items():
        lines.append(f"- {lib} skipped: {reason}")
    lines += [
        "## How each contender runs",
        "",
        "- **ours (synthseg preset)**: `Synthesizer()` (default `SynthConfig` = SynthSeg's training defaults: "
        "deformation, GMM, bias, gamma, resolution; no added noise), the whole batch in one call.",
        "- **ours (cornucopia-matched)**: `Synthesizer(cornucopia_matched_config(shape))`, the whole batch in one "
        "call; see below for the settings and what still differs.",
        "- **cornucopia**: `SynthFromLabelTransform()` with its defaults, one (1, *spatial) label map per call, "
        "looped over the batch (its usage: it transforms one image).",
        "- **TorchIO**: `Compose([RandomElasticDeformation(), RandomLabelsToImage(label_key='label', "
        "image_key='image'), RandomBiasField(), RandomBlur(), RandomNoise()])`, defaults, one `Subject` per "
        "image, looped over the batch; 2D label maps are (1, H, W, 1) with elastic max_displacement (7.5, 7.5, 0).",
        "- All under `torch.no_grad()`; label maps from `phantom_labels(batch, shape)` (8 labels), the same for all.",
        *_jit_note(),
        "",
        "## ours (cornucopia-matched): settings, and what still differs from cornucopia's defaults",
        "",
        *[f"- {case} settings: {describe_matched(c['shape'])}" for case, c in result["cases"].items()],
        *[f"- differs: {d}" for d in MATCHED_DIFFERENCES],
        "",
    ]
    return "\n".join(lines)


def _jit_note() -> list[str]:
    """cornucopia (and its interpolation library) drop their TorchScript decorators on torch >= 2.10: say so."""
    jit = _import("cornucopia.utils.jit")
    if jit is None or not getattr(jit, "IS_JITSCRIPT_DEPRECATED", False):
        return []
    return ["- With this torch, cornucopia and torch-interpol skip `torch.jit.script` (deprecated from torch 2.10), "
            "so their spline code runs eagerly (on older torch it is TorchScript-compiled)."]


def write_report(text: str, path: Path) -> None:
    """Write the generated report, keeping any hand-written notes below the ``KEEP`` marker."""
    kept = ""
    if path.exists():
        old = path.read_text()
        if KEEP in old:
            kept = old[old.index(KEEP) + len(KEEP) :]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n" + KEEP + (kept if kept else "\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="warm up on a 32-voxel crop, up to 3 timed calls within ~20 s per case, cornucopia and "
                        "TorchIO on one label map per call (about a minute at most)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (table on stderr)")
    parser.add_argument("--reps", type=int, help="timed batches per contender (default 7, quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed single-image calls per contender (default 2, quick 1)")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/synth_throughput.md); "
                        "full runs write it, --quick runs only when --out is given")
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args(argv)
    reps = args.reps or (3 if args.quick else 7)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    info = sys.stderr if args.json else sys.stdout

    def log(message):
        print(message, file=sys.stderr, flush=True)

    load_start = os.getloadavg()[0]
    quick = {"budget": 20.0, "per_image_limit": 1, "warmup_crop": 32} if args.quick else {}
    result = run_benchmark(reps=reps, warmup=warmup, log=log, **quick)
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    args_used = sys.argv[1:] if argv is None else argv
    command = " ".join([python, "benchmarks/synth_throughput.py", *map(shlex.quote, args_used)])
    report = format_report(result, command, (load_start, os.getloadavg()[0]))
    print(report, file=info)
    if not args.no_write and (args.out or not args.quick):
        path = args.out or RESULTS
        write_report(report, path)
        print(f"wrote {path}", file=sys.stderr)
    if args.json:
        flat = {k: v for k, v in result.items() if k != "cases"}
        flat["median_seconds"] = {case: c["median_seconds"] for case, c in result["cases"].items()}
        flat["best_seconds"] = {case: c["best_seconds"] for case, c in result["cases"].items()}
        print(json.dumps(flat, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
