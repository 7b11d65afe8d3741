"""Cross-noise Dice matrix (Learn2Synth, Hu et al., ICCV 2025, synthetic study) on procedural phantoms.

Models: one learn2synth segmenter per hidden noise level sigma in {0, 0.05, 0.10, 0.15} (the runs ``sigma_*`` of
``paper_recovery.py``, seed ``--seed``: reused from the same ``--work`` folder when present, trained otherwise with
the same resumable mechanism), and one synthseg segmenter (noise-free fixed synthesis, same budget). Each is tested
on the held-out 'real' test images at every noise level: the same clean phantoms (the clean images and labels of a
seed do not depend on the hidden sigma; ``tests/test_bench_paper.py`` checks it) with noise of that sigma.

Usage::

    .venv/bin/python benchmarks/paper_crossnoise.py            # full (after paper_recovery.py: 1 new run)
    .venv/bin/python benchmarks/paper_crossnoise.py --quick    # smoke run

Writes ``benchmarks/results/paper_crossnoise.md`` (``paper_crossnoise_quick.md`` with ``--quick``), a ``.json``
and the heatmap ``.png`` beside it.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paper_recovery as recovery  # noqa: E402
from learn2synth.io.atomic import atomic_path  # noqa: E402
from learn2synth.report import markdown_table  # noqa: E402

NAME = "paper_crossnoise"
TEST_SIGMAS = list(recovery.SIGMAS.values())
SYNTHSEG = "synthseg"


def model_specs(args) -> list[recovery.RunSpec]:
    """The synthseg run (validated on clean images), then the recovery runs ``sigma_*`` at ``args.seed``."""
    synthseg = recovery.make_spec(SYNTHSEG, recovery.hidden_sigma(0.0), args.seed, args.quick, args.sets, args.work,
                                  method="synthseg")
    return [synthseg, *[recovery.recovery_spec(name, args.seed, args.quick, args.sets, args.work)
                        for name in recovery.SIGMAS]]


def held_out_pool(sets: list[str], sigma: float):
    """The held-out 'real' test images of a run's config, with hidden noise ``sigma`` and no bias field."""
    from learn2synth.sources import phantom_real
    from learn2synth.synth import Synthesizer
    from learn2synth.train_config import load_train_config

    config = load_train_config(None, [*sets, *recovery.hidden_sigma(sigma)])
    return phantom_real(config, Synthesizer(config.synth))[1]


def dice_row(spec: recovery.RunSpec, pools: dict) -> dict[float, float]:
    """Mean Dice of a run's final segmenter on each test pool (sigma -> Dice)."""
    from learn2synth.checkpoint import latest_checkpoint
    from learn2synth.train import restore, setup

    run, _ = setup(recovery.load_config(spec))
    restore(run, latest_checkpoint(spec.folder))
    return {sigma: run.evaluate(pool)["dice_mean"] for sigma, pool in pools.items()}


def row_name(run: dict) -> str:
    """Row label of a run summary: synthseg, or learn2synth with its hidden and learned sigma."""
    if run["setting"] == SYNTHSEG:
        return "synthseg (noise-free synthesis)"
    return f"learn2synth @ sigma {recovery.SIGMAS[run['setting']]:g} (learned {run['learned']['noise.sigma']:.3f})"


def matrix_table(matrix: dict[str, dict[float, float]]) -> str:
    """Rows: training; columns: test sigma; the best model of each column in bold."""
    best = {s: max(row[s] for row in matrix.values()) for s in TEST_SIGMAS}
    cells = [[name, *[f"**{row[s]:.3f}**" if row[s] == best[s] else f"{row[s]:.3f}" for s in TEST_SIGMAS],
              f"{sum(row.values()) / len(row):.3f}"] for name, row in matrix.items()]
    return markdown_table(["trained on \\ tested at", *[f"sigma {s:g}" for s in TEST_SIGMAS], "mean"], cells)


def heatmap(path: Path, matrix: dict[str, dict[float, float]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.array([[row[s] for s in TEST_SIGMAS] for row in matrix.values()])
    fig, ax = plt.subplots(figsize=(1.3 * len(TEST_SIGMAS) + 3, 0.6 * len(matrix) + 1.2))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8,
                color="black" if v > values.mean() else "white")
    ax.set_xticks(range(len(TEST_SIGMAS)), [f"{s:g}" for s in TEST_SIGMAS])
    ax.set_yticks(range(len(matrix)), list(matrix))
    ax.set_xlabel("test sigma (held-out 'real' images)")
    ax.set_title("Dice (mean over classes)", fontsize=10)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def format_report(args, matrix: dict, runs: list[dict], wall: float) -> tuple[str, dict]:
    figure = heatmap(Path(args.out).with_suffix(".png"), matrix)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    total = sum(r["seconds"] for r in runs)
    from learn2synth.train_config import load_train_config

    test_count = load_train_config(None, runs[0]["sets"]).data.phantom_real.test_count
    lines = [
        *recovery.common.report_head("Learn2Synth cross-noise Dice on phantoms (paper's synthetic experiment)",
                                     args.quick, args.command),
        f"Date {date}. Training time of the {len(runs)} models: {recovery.duration(total)} (runs from `{args.work}`, "
        f"reused when finished); wall time of this invocation {recovery.duration(wall)}. "
        f"{recovery.common.environment()}.", "",
        "## Setting", "",
        f"- Paper: {recovery.PAPER_REF}. Models: learn2synth trained with 'real' images at each hidden sigma "
        f"(the `sigma_*` runs of `paper_recovery.py`, seed {args.seed}; augmenter learns one sigma, no bias), and "
        "synthseg (the same fixed synthesis without noise, same segmenter and steps).",
        f"- Test: the {test_count} held-out 'real' phantoms of seed {args.seed} (never seen in training), "
        "clean images identical for every column, with Gaussian noise of the column's sigma; no bias field. "
        "Dice: mean over classes and images, final checkpoint. Bold: best model per column.", "",
        "## Dice matrix", "", matrix_table(matrix), "",
        f"![cross-noise Dice]({figure.name})", "",
    ]
    record = {"command": args.command, "date": date, "environment": recovery.common.environment(),
              "quick": args.quick, "seed": args.seed, "test_sigmas": TEST_SIGMAS, "wall_seconds": wall,
              "matrix": {name: {str(s): v for s, v in row.items()} for name, row in matrix.items()}, "runs": runs}
    return "\n".join(lines), record


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of the models and of the test phantoms")
    recovery.add_run_args(parser, NAME)
    return recovery.finish_args(parser.parse_args(argv), __file__, argv, NAME)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    specs = model_specs(args)
    runs = recovery.ensure_runs(specs, args.jobs)
    pools = {s: held_out_pool(specs[0].sets, s) for s in TEST_SIGMAS}
    matrix = {row_name(run): dice_row(spec, pools) for spec, run in zip(specs, runs, strict=True)}
    text, record = format_report(args, matrix, runs, time.perf_counter() - t0)
    recovery.write_outputs(args.out, text, record)
    print(matrix_table(matrix))
    print(f"\nreport: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
