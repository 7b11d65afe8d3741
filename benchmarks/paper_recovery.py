"""Learn2Synth's parameter-recovery experiment (Hu et al., ICCV 2025, synthetic study) on procedural phantoms.

"Real" images are held-out phantoms with a hidden corruption; the parametric augmenter of ``method=learn2synth``
starts far from it and learns it by hypergradient from a few real labeled images. Settings, each on top of the
tuned demo settings (``learn2synth.demo.FULL``; ``--quick``: ``FULL`` + ``QUICK``):

- ``sigma_0``, ``sigma_0.05``, ``sigma_0.10``, ``sigma_0.15``: hidden noise sigma, no bias; one sigma learned.
- ``range``: hidden per-image sigma drawn from [0.025, 0.2], no bias; a sigma range learned (init [0.2, 0.4]).
- ``range_sigma``: the same hidden range; one sigma learned (the paper's single-sigma fit of the range).
- ``bias_1_0_0``, ``bias_.5_.5_.5``: hidden sigma 0.10 and bias exponents (2/4/8 control points); sigma and the
  three exponents learned.

Every (setting, seed) is one training run in ``WORK/<setting>/seed<k>``. The script is resumable: a run with a
``done.json`` is reused, an interrupted one continues from its newest checkpoint (``train(..., resume=True)``),
and a folder made with other settings is refused. The learned value of a run is
``learn2synth.runlog.learned_estimate`` (mean over the last 20% of logged steps), as in the demo.

Usage::

    .venv/bin/python benchmarks/paper_recovery.py                     # full: 8 settings x 3 seeds, 1000 steps
    .venv/bin/python benchmarks/paper_recovery.py --quick --jobs 1    # smoke run: 30 steps, 32x32 (< 1 min)
    .venv/bin/python benchmarks/paper_recovery.py --settings sigma_0.10 range --seeds 0

Writes ``benchmarks/results/paper_recovery.md`` (``paper_recovery_quick.md`` with ``--quick``), a ``.json`` and a
``.png`` of the learned-value trajectories beside it. ``benchmarks/paper_crossnoise.py`` reuses the runs.
A full run is 24 runs of about 4 min each on one thread (~0.25 s per meta-step at 64x64 on a busy machine), so
about an hour with ``--jobs 2``; interrupt it at any time and run the same command again to continue.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "experiments"))
import common  # noqa: E402

from learn2synth import demo  # noqa: E402
from learn2synth.io.atomic import atomic_path  # noqa: E402
from learn2synth.report import markdown_table  # noqa: E402
from learn2synth.runlog import learned_estimate, not_identified, series  # noqa: E402

RESULTS = HERE / "results"
WORK = Path("/tmp/l2s_paper")
# A hidden bias exponent of 0 is run as 1e-6 (a softplus never reaches 0; 1e-6 times a unit-variance log-field
# changes the images by ~1e-6, i.e. it is 0 for the experiment). Kept so earlier run folders stay reusable.
ZERO = 1e-6
PAPER_REF = "Hu et al., Learn2Synth, ICCV 2025 (synthetic parameter-recovery study)"


@dataclass(frozen=True)
class Setting:
    """Config sets of one experiment (hidden corruption + what the augmenter learns), the truth and the paper."""

    sets: tuple[str, ...]
    truth: dict[str, float | None]  # learned key -> hidden value (None: no single true value)
    paper: dict[str, float] = field(default_factory=dict)  # learned key -> value the paper recovered


def hidden_sigma(sigma: float) -> list[str]:
    """'Real' images with noise ``sigma`` (0: none) and no bias field."""
    return [f"data.phantom_real.sigma={sigma}", "data.phantom_real.bias=[]"]


def _hidden_bias(exponents: list[float]) -> list[str]:
    shown = [e if e > 0 else ZERO for e in exponents]
    return ["data.phantom_real.sigma=0.1", f"data.phantom_real.bias={json.dumps(shown)}"]


SIGMA_ONLY = ("augmenter.noise=sigma", "augmenter.bias_points=[]")
HIDDEN_RANGE = ("data.phantom_real.sigma_range=[0.025,0.2]", "data.phantom_real.bias=[]")
SIGMAS = {"sigma_0": 0.0, "sigma_0.05": 0.05, "sigma_0.10": 0.10, "sigma_0.15": 0.15}
PAPER_SIGMA = {"sigma_0": 0.001, "sigma_0.05": 0.042, "sigma_0.10": 0.098, "sigma_0.15": 0.146}
BIAS_KEYS = ("bias.low", "bias.middle", "bias.high")
SETTINGS: dict[str, Setting] = {
    **{name: Setting((*hidden_sigma(s), *SIGMA_ONLY), {"noise.sigma": s}, {"noise.sigma": PAPER_SIGMA[name]})
       for name, s in SIGMAS.items()},
    "range": Setting((*HIDDEN_RANGE, "augmenter.noise=range", "augmenter.noise_init=[0.2,0.4]",
                      "augmenter.bias_points=[]"),
                     {"noise.sigma_lo": 0.025, "noise.sigma_hi": 0.2},
                     {"noise.sigma_lo": 0.098, "noise.sigma_hi": 0.153}),
    "range_sigma": Setting((*HIDDEN_RANGE, *SIGMA_ONLY), {"noise.sigma": None}, {"noise.sigma": 0.134}),
    **{name: Setting(tuple(_hidden_bias(b)), {"noise.sigma": 0.1, **dict(zip(BIAS_KEYS, b, strict=True))})
       for name, b in (("bias_1_0_0", [1.0, 0.0, 0.0]), ("bias_.5_.5_.5", [0.5, 0.5, 0.5]))},
}


# -- runs ------------------------------------------------------------------------------------------------------
@dataclass
class RunSpec:
    """One training run: its name, seed, complete list of config sets and folder."""

    setting: str
    seed: int
    sets: list[str]
    folder: str


def base_sets(quick: bool) -> list[str]:
    """The demo's tuned settings (``FULL``, plus ``QUICK`` for a smoke run) as ``key=json`` sets."""
    settings = {**demo.FULL, **(demo.QUICK if quick else {})}
    return [f"{k}={json.dumps(v)}" for k, v in settings.items()]


def make_spec(name: str, setting_sets, seed: int, quick: bool, extra: list[str], work: Path,
              method: str = "learn2synth") -> RunSpec:
    """The run of ``name`` at ``seed``: demo settings < the setting's sets < ``extra``; one torch thread, so
    results do not depend on ``--jobs``; a checkpoint every fifth of the run, for resuming."""
    from learn2synth.train_config import load_train_config

    sets = [*base_sets(quick), f"method={method}", *setting_sets, *extra, f"seed={seed}", "threads=1"]
    if not any(s.startswith("checkpoint_every=") for s in extra):
        sets.append(f"checkpoint_every={max(1, load_train_config(None, sets).steps // 5)}")
    return RunSpec(name, seed, sets, str(work / name / f"seed{seed}"))


def recovery_spec(name: str, seed: int, quick: bool, extra: list[str], work: Path) -> RunSpec:
    return make_spec(name, SETTINGS[name].sets, seed, quick, extra, work)


def load_config(spec: RunSpec):
    """The run's validated ``TrainConfig``."""
    from learn2synth.train_config import load_train_config

    return load_train_config(None, spec.sets)


def _write_json(path: Path, data) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def check_folder(spec: RunSpec) -> None:
    """Refuse a folder that holds a run made with other settings (e.g. a --quick run in a full --work)."""
    saved = Path(spec.folder) / "spec.json"
    if saved.exists() and json.loads(saved.read_text())["sets"] != spec.sets:
        raise SystemExit(f"{spec.folder} holds a run with other settings; use another --work or remove that folder")


def run_one(spec: RunSpec) -> dict:
    """Train (or finish) one run, then write its summary to ``done.json``; returns the summary."""
    from learn2synth.checkpoint import latest_checkpoint
    from learn2synth.train import train

    check_folder(spec)
    folder = Path(spec.folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "spec.json", asdict(spec))
    config = load_config(spec)
    newest = latest_checkpoint(folder)
    t0 = time.perf_counter()
    metrics = train(config, folder, resume=True, progress=False, tensorboard=False)
    seconds = time.perf_counter() - t0
    summary = {**asdict(spec), "method": config.method, "steps": config.steps, "seconds": seconds,
               "resumed_from": newest.name if newest else None, "dice_mean": metrics["dice_mean"],
               "dice": {k: v for k, v in metrics.items() if k.startswith("dice_")},
               "learned": learned_estimate(folder / "metrics.csv")}
    _write_json(folder / "done.json", summary)
    return summary


def load_done(spec: RunSpec) -> dict | None:
    """The summary of a finished run of ``spec`` (None if not finished); other settings in the folder: error."""
    check_folder(spec)
    done = Path(spec.folder) / "done.json"
    return json.loads(done.read_text()) if done.exists() else None


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _in_subprocess(spec: RunSpec) -> dict:
    """``run_one`` in a fresh interpreter (parallel runs; each uses one torch thread)."""
    code = subprocess.run([sys.executable, __file__, "--run-one", json.dumps(asdict(spec))],
                          stdout=subprocess.DEVNULL).returncode
    if code:
        raise RuntimeError(f"its process exited with code {code}; its error is printed above")
    return load_done(spec)


def _describe(summary: dict) -> str:
    learned = ", ".join(f"{k} {v:.4g}" for k, v in summary["learned"].items())
    return (f"{summary['setting']} seed {summary['seed']}: {summary['seconds']:.0f} s, Dice "
            f"{summary['dice_mean']:.3f}" + (f", {learned}" if learned else ""))


def _outcomes(specs: list[RunSpec], jobs: int):
    """Yield (spec index, summary or exception) as runs finish: in this process for ``jobs=1`` (Ctrl-C stops the
    run at once), else ``jobs`` subprocesses at a time (Ctrl-C also reaches them; queued runs are cancelled)."""
    if jobs <= 1:
        for i, spec in enumerate(specs):
            try:
                yield i, run_one(spec)
            except Exception as e:  # reported with the run's name; the other runs go on
                yield i, e
        return
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(_in_subprocess, spec): i for i, spec in enumerate(specs)}
        for future in as_completed(futures):
            yield futures[future], future.exception() or future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ensure_runs(specs: list[RunSpec], jobs: int = 1) -> list[dict]:
    """Summaries of every run, in order: finished runs reused, the others trained (``jobs`` in parallel, each in
    its own process; ``jobs=1``: in this process). Raises SystemExit naming the runs that failed."""
    summaries = [load_done(s) for s in specs]
    for i, s in enumerate(summaries):
        if s is not None:
            print(f"[{i + 1}/{len(specs)}] done earlier: {_describe(s)}", flush=True)
    pending = [i for i, s in enumerate(summaries) if s is None]
    failed = []
    for k, outcome in _outcomes([specs[i] for i in pending], jobs):
        i = pending[k]
        if isinstance(outcome, BaseException):
            failed.append(f"{specs[i].setting} seed {specs[i].seed} ({outcome})")
            print(f"[{i + 1}/{len(specs)}] FAILED {failed[-1]}", flush=True)
        else:
            summaries[i] = outcome
            print(f"[{i + 1}/{len(specs)}] {_describe(outcome)}", flush=True)
    if failed:
        raise SystemExit("runs failed: " + "; ".join(failed))
    return summaries


# -- the report ------------------------------------------------------------------------------------------------
def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def _pm(mean: float, sd: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def _within(values: list[float], mean: float, truth: float | None, tol: float) -> str:
    if not truth:  # relative error undefined for 0 / no single truth
        return "n/a"
    ok = sum(abs(v - truth) <= tol * truth for v in values)
    return f"{'yes' if abs(mean - truth) <= tol * truth else 'no'} ({ok}/{len(values)} seeds)"


def recovery_rows(name: str, runs: list[dict]) -> list[dict]:
    """One row per learned parameter of a setting: truth, mean ± sd over seeds, errors, the paper's value."""
    setting, rows = SETTINGS[name], []
    for key, truth in setting.truth.items():
        values = [r["learned"][key] for r in runs if key in r["learned"]]
        mean, sd = mean_sd(values) if values else (float("nan"), float("nan"))
        rows.append({"setting": name, "parameter": key, "truth": truth, "values": values, "mean": mean, "sd": sd,
                     "abs_error": None if truth is None else abs(mean - truth),
                     "rel_error": (mean - truth) / truth if truth else None,
                     "within_5": _within(values, mean, truth, 0.05), "within_10": _within(values, mean, truth, 0.10),
                     "paper": setting.paper.get(key),
                     # the settings keep the default bias points (2/4/8) and instance norm
                     "not_identified": not_identified().get(key)})
    return rows


def _truth_cell(row: dict) -> str:
    if row["truth"] is None:
        return "[0.025, 0.2] per image"
    return f"{row['truth']:g}"


def recovery_table(rows: list[dict]) -> str:
    header = ["setting", "parameter", "truth", "learned (mean ± sd over seeds)", "abs. error", "rel. error",
              "within ±5%", "within ±10%", "paper"]
    cells = []
    for r in rows:
        if r.get("not_identified"):  # a value the hypergradient does not determine is not reported as learned
            cells.append([r["setting"], r["parameter"], _truth_cell(r), _pm(r["mean"], r["sd"]) + " (not identified)",
                          "n/a", "n/a", "n/a", "n/a", "-" if r["paper"] is None else f"{r['paper']:g}"])
            continue
        cells.append([r["setting"], r["parameter"], _truth_cell(r), _pm(r["mean"], r["sd"]),
                      "-" if r["abs_error"] is None else f"{r['abs_error']:.4f}",
                      "n/a" if r["rel_error"] is None else f"{100 * r['rel_error']:+.1f}%", r["within_5"],
                      r["within_10"], "-" if r["paper"] is None else f"{r['paper']:g}"])
    table = markdown_table(header, cells)
    reasons = {r["parameter"]: r["not_identified"] for r in rows if r.get("not_identified")}
    return "\n\n".join([table, *[f"Not identified, `{k}`: {why}." for k, why in reasons.items()]])


def dice_time_table(by_setting: dict[str, list[dict]]) -> str:
    header = ["setting", "seeds", "Dice on held-out real (mean ± sd)", "s per run (mean)", "s (sum)"]
    cells = []
    for name, runs in by_setting.items():
        dice = mean_sd([r["dice_mean"] for r in runs])
        secs = [r["seconds"] for r in runs]
        cells.append([name, len(runs), _pm(*dice, digits=3), f"{statistics.fmean(secs):.0f}", f"{sum(secs):.0f}"])
    return markdown_table(header, cells)


def per_run_table(runs: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in runs for k in r["learned"]))
    cells = [[r["setting"], r["seed"], *[f"{r['learned'][k]:.4g}" if k in r["learned"] else "-" for k in keys],
              f"{r['dice_mean']:.3f}", f"{r['seconds']:.0f}", r["resumed_from"] or "-"] for r in runs]
    return markdown_table(["setting", "seed", *keys, "Dice", "s", "resumed from"], cells)


def plot_trajectories(path: Path, by_setting: dict[str, list[dict]]) -> Path:
    """One panel per setting: each learned value over steps (one line per seed), its truth dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, len(by_setting))
    nrows = math.ceil(len(by_setting) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (name, runs) in zip(axes.flat, by_setting.items(), strict=False):
        for c, (key, truth) in enumerate(SETTINGS[name].truth.items()):
            color = f"C{c}"
            for k, run in enumerate(runs):
                points = series(Path(run["folder"]) / "metrics.csv", [key])[key]
                if points:
                    ax.plot(*zip(*points, strict=True), color=color, linewidth=1, alpha=0.8,
                            label=key if k == 0 else None)
            if truth is None:  # a single sigma fitted to a range of sigmas: shade the range
                ax.axhspan(0.025, 0.2, color=color, alpha=0.1)
            else:
                ax.axhline(truth, color=color, linestyle="--", linewidth=0.9)
        shown = "shaded: hidden range" if None in SETTINGS[name].truth.values() else "dashed: truth"
        ax.set_title(f"{name} ({len(runs)} seed(s); {shown})", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(by_setting):]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def setup_lines(quick: bool, extra: list[str], seeds: list[int]) -> list[str]:
    """What every run shares, for the report."""
    from learn2synth.train_config import load_train_config

    c = load_train_config(None, [*base_sets(quick), *extra])
    return [
        f"- Paper: {PAPER_REF}. Ours: procedural phantoms, {c.data.shape} images, {c.data.n_classes} labels with one "
        f"fixed intensity each (shared by synthesis and 'real' images, so the hidden corruption is the only gap).",
        f"- Every run: `method=learn2synth`, U-Net channels {c.net.channels}, {c.steps} steps of batch "
        f"{c.batch_size}, {c.data.phantom_real.train_count} real labeled images (hypergradient only), meta warm-up "
        f"{c.meta.warmup} steps, augmenter Adam lr {c.augmenter.lr} betas {c.augmenter.betas}; sigma starts at "
        f"{c.augmenter.noise_init[0]} (range: [0.2, 0.4]), bias exponents at {c.augmenter.bias_init[0]}. "
        f"Seeds {seeds}; 1 torch thread per run.",
        "- Learned value of a run: mean over the last 20% of its logged steps (`runlog.learned_estimate`); table: "
        "mean ± sd over seeds. 'within ±5%': the seed mean within 5% of the truth (and how many seeds are).",
        f"- Dice: mean over classes on the {c.data.phantom_real.test_count} held-out 'real' test images of the "
        "setting (same corruption as the training real images), at the last step.",
        f"- A hidden bias exponent of 0 is run as {ZERO:g} (a softplus-parametrized exponent is never exactly 0).",
        "- Settings: `sigma_*` hidden noise only, one sigma learned; `range` per-image sigma from [0.025, 0.2], "
        "a range learned; `range_sigma` same images, one sigma learned (the paper's 0.134 is this fit); `bias_*` "
        "hidden sigma 0.10 and bias exponents (low/middle/high: 2/4/8 control points), all four learned.",
    ]


def format_report(args, runs: list[dict], trained_now: int, wall: float) -> tuple[str, dict]:
    by_setting = {name: [r for r in runs if r["setting"] == name] for name in args.settings}
    rows = [row for name, rs in by_setting.items() for row in recovery_rows(name, rs)]
    figure = plot_trajectories(Path(args.out).with_suffix(".png"), by_setting)
    total = sum(r["seconds"] for r in runs)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [
        *common.report_head("Learn2Synth parameter recovery on phantoms (paper's synthetic experiment)", args.quick,
                            args.command),
        f"Date {date}. Run time: {duration(total)} summed over the {len(runs)} runs ({trained_now} trained by "
        f"this invocation, the others reused from `{args.work}`); wall time of this invocation "
        f"{duration(wall)} with {args.jobs} parallel job(s). {common.environment()}.", "",
        "## Setting", "", *setup_lines(args.quick, args.sets, args.seeds), "",
        "## Learned values", "", recovery_table(rows), "",
        "## Dice and run time", "", dice_time_table(by_setting), "",
        "## Per run", "", per_run_table(runs), "",
        "## Trajectories", "", f"![learned values over steps]({figure.name})", "",
    ]
    record = {"command": args.command, "date": date, "environment": common.environment(), "quick": args.quick,
              "seeds": args.seeds, "jobs": args.jobs, "wall_seconds": wall, "run_seconds_total": total,
              "rows": rows, "runs": runs}
    return "\n".join(lines), record


def write_outputs(out: Path, text: str, record: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".md") as tmp:
        tmp.write_text(text)
    _write_json(out.with_suffix(".json"), record)


# -- command line ----------------------------------------------------------------------------------------------
def add_run_args(parser: argparse.ArgumentParser, default_out: str) -> None:
    """Options shared with paper_crossnoise.py (the same values let it reuse these runs)."""
    parser.add_argument("--quick", action="store_true", help="smoke run: demo.QUICK settings (30 steps, 32x32)")
    parser.add_argument("--work", type=Path, help=f"run folders (default {WORK}, with --quick {WORK}_quick)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one process and torch thread each")
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=JSON",
                        help="extra config override for every run (repeatable; part of a run's identity)")
    parser.add_argument("--out", type=Path, help=f"markdown report (default benchmarks/results/{default_out}.md, "
                                                 f"{default_out}_quick.md with --quick); .json and .png beside it")


def finish_args(args, script: str, argv, default_out: str):
    args.command = common.command_line(script, argv)
    args.work = args.work or Path(f"{WORK}_quick" if args.quick else WORK)
    args.out = args.out or RESULTS / f"{default_out}{'_quick' if args.quick else ''}.md"
    return args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), metavar="NAME",
                        help="subset of: " + " ".join(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_run_args(parser, "paper_recovery")
    return finish_args(parser.parse_args(argv), __file__, argv, "paper_recovery")


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--run-one"]:
        run_one(RunSpec(**json.loads(sys.argv[2])))
        return 0
    args = parse_args(argv)
    t0 = time.perf_counter()
    specs = [recovery_spec(name, seed, args.quick, args.sets, args.work)
             for name in args.settings for seed in args.seeds]
    trained_now = sum(load_done(s) is None for s in specs)
    runs = ensure_runs(specs, args.jobs)
    text, record = format_report(args, runs, trained_now, time.perf_counter() - t0)
    write_outputs(args.out, text, record)
    print(recovery_table(record["rows"]))
    print(f"\nreport: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
