"""``learn2synth demo``: Learn2Synth's parameter-recovery experiment on procedural phantoms.

"Real" images are made from held-out phantom label maps with a hidden noise level and bias field. The
parametric augmenter starts far from the truth and learns both by hypergradient, from a few real labeled images;
a SynthSeg-style segmenter trained on the clean synthesis with the same budget is the baseline. The report
compares the learned values with the truth, and both segmenters on held-out real images.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from .errors import InputError

# One fixed intensity per phantom label (background, CSF, cortex, white matter, ventricles, nucleus): the "real"
# images and the synthesis share it, so the hidden noise and bias field are the only gap to learn (with random
# contrast the noise level barely changed Dice and the learned sigma drifted to ~0; see the training issue's notes).
CONTRAST = [0.0, 0.25, 0.55, 1.0, 0.7, 0.4]
# Settings chosen by a tuning study (see the closing notes of the training issue); QUICK is a smoke test.
FULL = {
    "steps": 1000,
    "data.shape": [64, 64],
    "data.n_classes": len(CONTRAST),
    "data.phantom_real.contrast": CONTRAST,
    "synth.gmm.mean": [[c, c] for c in CONTRAST],
    "net.channels": [8, 16, 32],
    "optim.lr": 2e-3,
    "augmenter.noise_init": [0.3],
    # a meta-step every 4th step (TrainConfig's default) gets a quarter of the updates: a 3x rate to travel as far,
    # decaying to a tenth of it so that the learned values settle (paper_recovery_default_5seeds.md)
    "augmenter.lr": 0.045,
    "augmenter.lr_final": 0.1,
    "augmenter.betas": [0.0, 0.999],
    "meta.warmup": 100,
}
QUICK = {
    "steps": 30,
    "data.shape": [32, 32],
    "data.phantom_count": 16,
    "data.phantom_real.test_count": 8,
    "val_every": 30,
    "meta.warmup": 5,
}
HIDDEN = {"sigma": 0.10, "bias": [0.5, 0.5, 0.5]}


def demo_configs(quick: bool, seed: int):
    """The learn2synth and synthseg configs of the demo (same segmenter, data and step budget)."""
    from .train_config import load_train_config

    settings = {**FULL, **(QUICK if quick else {})}
    sets = _as_sets(settings)
    sets += [f"seed={seed}", f"data.phantom_real.sigma={HIDDEN['sigma']}",
             f"data.phantom_real.bias={json.dumps(HIDDEN['bias'])}", "checkpoint_every=1000000"]
    # learn2synth runs TrainConfig's meta defaults (fd_onesided, a meta-step every 4th step, the debiased
    # hypergradient with the next step's gradient as reference; learn2synth.meta.hypergrad._objective)
    l2s = load_train_config(None, ["method=learn2synth", *sets])
    synthseg = load_train_config(None, ["method=synthseg", *sets])
    return l2s, synthseg


def _as_sets(settings: dict) -> list[str]:
    """``{"a.b": value}`` as ``--set`` strings (``a.b=<json>``)."""
    return [f"{k}={json.dumps(v)}" for k, v in settings.items()]


def _prepare(out: Path) -> Path:
    """A fresh temporary folder beside ``out``; ``out`` may only be replaced if it holds an earlier demo."""
    if out.exists() and any(out.iterdir()) and not (out / "results.json").exists():
        raise InputError(out, "exists and is not an earlier demo output; choose another --out (nothing overwritten)")
    if not out.parent.exists():
        raise InputError(out.parent, "folder does not exist")
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def _finish(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def run_demo(args) -> int:
    for flag in ("seeds", "jobs"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag}", f"needs a count >= 1, got {getattr(args, flag)}")
    seeds = [args.seed + k for k in range(args.seeds)]
    out = Path(args.out)
    tmp = _prepare(out)
    t0 = time.perf_counter()
    try:
        configs = {seed: demo_configs(args.quick, seed) for seed in seeds}
        jobs = [(name, seed, cfg, tmp / "runs" / _run_name(name, seed, seeds[0]))
                for seed in seeds for name, cfg in zip(("learn2synth", "synthseg"), configs[seed], strict=True)]
        print(f"training learn2synth and synthseg for seed(s) {', '.join(map(str, seeds))} "
              f"({configs[seeds[0]][0].steps} steps each, {len(jobs)} runs, {args.jobs} at a time)...", flush=True)
        results = _train_all(jobs, args.jobs)
        summary = _summarize(tmp, configs, results, seeds, time.perf_counter() - t0, args.quick)
        _finish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(summary["table"])
    if args.quick:
        print("--quick: a smoke run of a few steps; its numbers say nothing about accuracy")
    print(f"\nreport: {out / 'report.md'}")
    return 0


def _run_name(name: str, seed: int, first: int) -> str:
    """The first seed's runs are ``runs/<method>`` (the figures use them), the others ``runs/<method>_seed<k>``."""
    return name if seed == first else f"{name}_seed{seed}"


def _train_job(job) -> dict:
    """One demo run (in a worker process when ``--jobs`` > 1: one torch thread each)."""
    import torch

    from .train import train

    name, seed, cfg, folder, threads = job
    torch.set_num_threads(threads)
    return train(cfg, folder, progress=False, tensorboard=False)


def _train_all(jobs: list, n_jobs: int) -> dict:
    """{(method, seed): final metrics}; ``n_jobs`` runs at a time (spawned processes), a line per finished run."""
    import torch

    from .runlog import learned_estimate

    results, total = {}, len(jobs)

    def report(job, metrics):
        results[job[:2]] = metrics
        learned = learned_estimate(job[3] / "metrics.csv").get("noise.sigma")
        extra = f", noise sigma {learned:.4f}" if learned is not None else ""
        print(f"[{len(results)}/{total}] {job[0]} seed {job[1]}: {metrics['seconds']:.0f} s, Dice "
              f"{metrics['dice_mean']:.3f}{extra}", flush=True)

    if n_jobs <= 1:
        threads = max(1, min(2, torch.get_num_threads()))
        for job in jobs:
            report(job, _train_job((*job, threads)))
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_job, (*job, 1)): job for job in jobs}
        for future in as_completed(futures):
            report(futures[future], future.result())
    return results


def _spread(values: list) -> str:
    """'mean ± sd (min - max)' over seeds (sd: population), or the one value."""
    import statistics

    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return (f"{statistics.fmean(values):.4g} ± {statistics.pstdev(values):.2g} "
            f"({min(values):.4g} - {max(values):.4g})")


def _summarize(folder: Path, configs: dict, results: dict, seeds: list, seconds: float,
               quick: bool = False) -> dict:
    import statistics

    from .report import markdown_table
    from .report_demo import demo_figures
    from .runlog import learned_estimate, not_identified

    l2s_cfg, base_cfg = configs[seeds[0]]
    unidentified = not_identified(l2s_cfg.augmenter.bias_points, l2s_cfg.net.norm)
    names = ["noise.sigma", "bias.low", "bias.middle", "bias.high"]
    truth = dict(zip(names, [HIDDEN["sigma"], *HIDDEN["bias"]], strict=True))
    per_seed = []
    for seed in seeds:
        learned = learned_estimate(folder / "runs" / _run_name("learn2synth", seed, seeds[0]) / "metrics.csv")
        per_seed.append({"seed": seed, **{name: learned.get(name) for name in names},
                         "dice_learn2synth": results[("learn2synth", seed)]["dice_mean"],
                         "dice_synthseg": results[("synthseg", seed)]["dice_mean"]})
    mean = {key: (statistics.fmean(vals) if (vals := [r[key] for r in per_seed if r[key] is not None]) else None)
            for key in [*names, "dice_learn2synth", "dice_synthseg"]}
    labels = {"noise.sigma": "noise sigma", "bias.low": "bias exponent (low)", "bias.middle": "bias exponent (middle)",
              "bias.high": "bias exponent (high)"}
    rows = []
    for name in names:
        if name in unidentified:
            rows.append([labels[name], truth[name], "not identified", "-", "-", "-"])
            continue
        within = sum(abs(r[name] - truth[name]) <= 0.05 * truth[name] for r in per_seed if r[name] is not None)
        rows.append([labels[name], truth[name], _spread([r[name] for r in per_seed]), _rel(mean[name], truth[name]),
                     f"{within}/{len(per_seed)}", "-"])
    rows.append(["Dice on held-out real (mean)", "-", _spread([r["dice_learn2synth"] for r in per_seed]), "-", "-",
                 _spread([r["dice_synthseg"] for r in per_seed])])
    table = markdown_table(["quantity", "truth", f"learn2synth (mean ± sd (min - max) over {len(seeds)} seed(s))",
                            "error of the mean", "seeds within 5%", "synthseg"], rows)
    record = {
        "true_sigma": HIDDEN["sigma"], "learned_sigma": mean["noise.sigma"],
        "true_bias_exponents": HIDDEN["bias"], "learned_bias_exponents": [mean[n] for n in names[1:]],
        "not_identified": unidentified, "seeds": seeds, "per_seed": per_seed,
        "dice_learn2synth": mean["dice_learn2synth"], "dice_synthseg": mean["dice_synthseg"],
        "dice_per_class_learn2synth": {k: v for k, v in results[("learn2synth", seeds[0])].items()
                                       if k.startswith("dice_")},
        "dice_per_class_synthseg": {k: v for k, v in results[("synthseg", seeds[0])].items() if k.startswith("dice_")},
        "steps": l2s_cfg.steps, "seconds": seconds, "meta": dict(vars(l2s_cfg.meta)),
        "seconds_per_run": {f"{name} seed {seed}": r["seconds"] for (name, seed), r in results.items()},
    }
    (folder / "results.json").write_text(json.dumps(record, indent=2))
    figures = demo_figures(folder, l2s_cfg, base_cfg, HIDDEN)
    m = l2s_cfg.meta
    lines = [
        "# learn2synth demo: learning the synthesis on phantoms", "",
        *(["**`--quick`: a smoke run of a few steps; its numbers say nothing about accuracy.**", ""] if quick else []),
        f"Hidden corruption of the 'real' images: noise sigma {HIDDEN['sigma']}, bias exponents {HIDDEN['bias']}. "
        f"Both segmenters: same U-Net, {l2s_cfg.steps} steps, {l2s_cfg.data.shape} images, "
        f"{l2s_cfg.data.phantom_real.train_count} real labeled images for learn2synth (never used to train the "
        f"segmenter), {l2s_cfg.data.phantom_real.test_count} held-out real images for the Dice; seeds {seeds} "
        "(each seed draws its own real images, synthetic batches and initial weights).", "",
        table, "", "Learned values: mean over the last 20% of the steps of each run; the table gives their spread "
        f"over the seeds. Hypergradient: `meta.mode: {m.mode}`, a meta-step every {m.meta_every} step(s), "
        f"debiased: {m.debias} (reference: {m.debias_reference}); augmenter lr {l2s_cfg.augmenter.lr} decaying to "
        f"{l2s_cfg.augmenter.lr_final:g}x. Seeds and noise levels: benchmarks/results/paper_recovery*.md.",
        *[f"Not identified, `{key}`: {reason}." for key, reason in unidentified.items()],
        "", f"Total time: {seconds:.0f} s. Figures: the first seed's runs.", "",
        *[f"![{name}]({path.name})" for name, path in figures.items()], "",
    ]
    (folder / "report.md").write_text("\n".join(lines))
    return {"table": table, **record}


def _rel(value, truth) -> str:
    """Relative error as text ('-' when undefined)."""
    if value is None or not truth:
        return "-"
    return f"{100 * (value - truth) / truth:+.1f}%"
