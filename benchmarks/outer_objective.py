"""The one-step outer objective of a paper_recovery setting along sigma, for a fixed segmenter.

What is the second place where paper_recovery's seed 2 settles (hidden sigma 0.10, learned 0.19)? For each seed,
the run is built as ``paper_recovery.py`` builds it (same config sets and seed: same phantoms, real images and
initial segmenter). The segmenter takes ``--steps`` plain synthetic steps with the augmenter frozen at
``--train-sigma`` (the run's warm-up is 100 steps at its initial sigma 0.3), then is frozen, and for each sigma of
a grid the one-step outer objective is averaged over ``--batches`` fixed draws (common random numbers: the same
label maps, noise draws and real batches at every sigma):

    J(sigma)   = mean_k loss_real_k(phi'_k(sigma)),   phi'_k = update(phi, grad loss_synth_k(phi, sigma))
    debiased field: d/ds mean_k [loss_real_k - loss_ref_k(sigma)](phi'_k(s)) at s = sigma   (meta.debias: the
                    reference batch is augmented at the current sigma and held fixed)

``update`` is the run's Adam step from the run's optimizer state. The hypergradient the run follows is dJ/dsigma
(the debiased field with ``meta.debias``), so its stable zeros are where a run can settle for that segmenter; if a
curve's minimum moves with ``--train-sigma``, the plateau is a fixed point of the joint dynamics (the segmenter
adapts to the sigma it is trained at, which makes that sigma look right), not of J for one segmenter.

Usage::

    .venv/bin/python benchmarks/outer_objective.py                      # seeds 0 and 2, segmenters at 0.10/0.19
    .venv/bin/python benchmarks/outer_objective.py --quick              # tiny smoke run (seconds)

Writes ``benchmarks/results/outer_objective.md`` (``outer_objective_quick.md`` with ``--quick``), a ``.json``
and a ``.png`` beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import paper_recovery  # noqa: E402
from learn2synth.meta.hypergrad import plain_step  # noqa: E402

RESULTS = HERE / "results"


def set_sigma(augmenter, sigma: float) -> None:
    with torch.no_grad():
        augmenter.raw_sigma.fill_(sigma + math.log(-math.expm1(-sigma)))  # softplus^-1


def build(setting: str, seed: int, quick: bool):
    from learn2synth.train import setup

    spec = paper_recovery.recovery_spec(setting, seed, quick, [], Path("/nonexistent"))
    config = paper_recovery.load_config(spec)
    run, _ = setup(config)
    return run, config


def warm(run, steps: int, sigma: float) -> None:
    """``steps`` plain steps on augmented synthetic batches with the augmenter frozen at ``sigma``."""
    set_sigma(run.augmenter, sigma)
    for _ in range(steps):
        x, y = run.synth_batch()
        with torch.no_grad():
            xa = run.augmenter.apply(x, run.augmenter.sample(x, run.generator))
        run.update(xa, y)


def objective_curve(run, sigmas, batches: int, h: float = 0.01) -> dict:
    """J at every sigma and the two hypergradient fields along sigma, with the same draws at every sigma.

    ``dJ`` = dJ/dsigma (the paper's estimator's expectation); ``dJ_debiased`` = d/ds [loss_real - loss_ref](phi'(s))
    at s = sigma with the reference batch augmented at sigma and held fixed, as ``meta.debias`` does (the reference
    images do not carry theta). Both by central differences of step ``h`` in the synthetic batch's sigma.
    The segmenter and its optimizer state are fixed.
    """
    draws = []
    for _ in range(batches):
        x, y = run.synth_batch()
        noise = run.augmenter.sample(x, run.generator)
        xr, yr = run.real_batch()
        x2, y2 = run.synth_batch()
        noise2 = run.augmenter.sample(x2, run.generator)
        draws.append((x, y, noise, xr, yr, x2, y2, noise2))
    out = {"sigma": list(sigmas), "J": [], "J_sd": [], "dJ": [], "dJ_debiased": []}
    for sigma in sigmas:
        set_sigma(run.augmenter, sigma)
        with torch.no_grad():
            refs = [(run.augmenter.apply(x2, noise2), y2) for *_, x2, y2, noise2 in draws]
        sides = {}
        for side in (-1, 1):
            set_sigma(run.augmenter, sigma + side * h)
            real, ref = [], []
            for (x, y, noise, xr, yr, *_), (xa2, y2) in zip(draws, refs, strict=True):
                with torch.no_grad():
                    xa = run.augmenter.apply(x, noise)
                new = plain_step(run.net, run.params, run.opt, run.opt_state,
                                 lambda p, xa=xa, y=y: run.loss(p, xa, y)).new_params
                with torch.no_grad():
                    real.append(float(run.loss(new, xr, yr)))
                    ref.append(float(run.loss(new, xa2, y2)))
            sides[side] = (real, ref)
        real = [(a + b) / 2 for a, b in zip(sides[-1][0], sides[1][0], strict=True)]
        mean = sum(real) / len(real)
        out["J"].append(mean)
        out["J_sd"].append(math.sqrt(sum((r - mean) ** 2 for r in real) / max(1, len(real) - 1) / len(real)))
        d_real = (sum(sides[1][0]) - sum(sides[-1][0])) / (2 * h * len(real))
        d_ref = (sum(sides[1][1]) - sum(sides[-1][1])) / (2 * h * len(real))
        out["dJ"].append(d_real)
        out["dJ_debiased"].append(d_real - d_ref)
    return out


def settling_points(sigmas, field) -> list[float]:
    """Where a descent along ``-field`` settles: sign changes from - to + (linear interpolation)."""
    out = []
    for i in range(len(field) - 1):
        if field[i] < 0 <= field[i + 1]:
            t = -field[i] / (field[i + 1] - field[i])
            out.append(round(sigmas[i] + t * (sigmas[i + 1] - sigmas[i]), 4))
    return out


def minima(sigmas, values) -> list[float]:
    """Grid points that are local minima (interior, or an end lower than its neighbour)."""
    n = len(values)
    return [sigmas[i] for i in range(n)
            if (i == 0 or values[i] < values[i - 1]) and (i == n - 1 or values[i] < values[i + 1])]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", default="sigma_0.10")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--train-sigma", type=float, nargs="+", default=[0.10, 0.19])
    parser.add_argument("--steps", type=int, default=300, help="plain steps before freezing the segmenter")
    parser.add_argument("--batches", type=int, default=8, help="draws averaged per sigma")
    parser.add_argument("--grid", type=float, nargs="+",
                        default=[0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16, 0.19, 0.22, 0.26, 0.30, 0.35])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="32x32, 5 steps, 2 batches, 4 sigmas")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batches, args.grid, args.seeds, args.train_sigma = 5, 2, [0.05, 0.1, 0.2, 0.3], [0], [0.1]
    torch.set_num_threads(args.threads)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    curves = []
    for seed in args.seeds:
        for train_sigma in args.train_sigma:
            run, config = build(args.setting, seed, args.quick)
            torch.set_num_threads(args.threads)
            warm(run, args.steps, train_sigma)
            curve = objective_curve(run, args.grid, args.batches)
            curve.update(seed=seed, train_sigma=train_sigma, minima_J=minima(args.grid, curve["J"]),
                         settles=settling_points(args.grid, curve["dJ"]),
                         settles_debiased=settling_points(args.grid, curve["dJ_debiased"]))
            curves.append(curve)
            print(f"seed {seed} segmenter trained at sigma {train_sigma}: minima of J at {curve['minima_J']}, "
                  f"dJ/dsigma = 0 (stable) at {curve['settles']}, debiased at {curve['settles_debiased']}",
                  flush=True)
    suffix = "_quick" if args.quick else ""
    stem = RESULTS / f"outer_objective{suffix}"
    stem.with_suffix(".json").write_text(json.dumps({"args": vars(args), "curves": curves}, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for c in curves:
            label = f"seed {c['seed']}, segmenter at {c['train_sigma']}"
            axes[0].errorbar(c["sigma"], c["J"], yerr=c["J_sd"], label=label, marker="o", ms=3, capsize=2)
            axes[1].plot(c["sigma"], c["dJ"], label=label + " (paper)", marker="o", ms=3)
            axes[1].plot(c["sigma"], c["dJ_debiased"], label=label + " (debiased)", marker="x", ms=3, ls=":")
        hidden = paper_recovery.SETTINGS[args.setting].truth.get("noise.sigma")
        axes[1].axhline(0, color="k", lw=0.6)
        axes[1].legend(fontsize=6)
        for ax, title in zip(axes, ("J = loss_real(phi')", "hypergradient fields along sigma"), strict=True):
            if hidden:
                ax.axvline(hidden, color="k", ls="--", lw=0.8)
            ax.set_xlabel("augmenter sigma")
            ax.set_title(title)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(stem.with_suffix(".png"), dpi=100)
    except ImportError:
        pass
    lines = [f"# One-step outer objective along sigma ({args.setting}, fixed segmenters)", "",
             f"- Command: `.venv/bin/python benchmarks/outer_objective.py {' '.join(argv or sys.argv[1:])}`",
             f"- {args.steps} plain steps at the training sigma, then J averaged over {args.batches} fixed draws per "
             f"sigma (common random numbers); {time.perf_counter() - t0:.0f} s, load {load0:.1f} at start.", "",
             "| seed | segmenter trained at sigma | minima of J | dJ/dsigma = 0, stable (paper) | "
             "stable, debiased | " + " | ".join(f"J({s:g})" for s in args.grid) + " |",
             "|---|---|---|---|---|" + "---:|" * len(args.grid)]
    for c in curves:
        lines.append(f"| {c['seed']} | {c['train_sigma']:g} | {c['minima_J']} | {c['settles']} | "
                     f"{c['settles_debiased']} | " + " | ".join(f"{v:.4f}" for v in c["J"]) + " |")
    lines += ["", f"![J along sigma]({stem.with_suffix('.png').name})", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
