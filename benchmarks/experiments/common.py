"""Shared machinery of the real-data experiments: train every method with the same segmenter and step budget,
segment the test images with the trained checkpoints, score them, and write a markdown report with a figure.

Each experiment script (``exp_brain.py``, ``exp_em.py``, ``exp_isbi.py``) prepares its data in a temporary
folder (label maps for synthesis, a manifest of the few real training pairs), builds one config per method with
``learn2synth.train_config.load_train_config(<configs/experiments/*.yaml>, sets)``, and hands them to
:func:`run_methods`. Nothing from the shared data folder is copied into the repository.
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]

# Every method sees the same experiment config; these sets are all that differs between them.
METHODS: dict[str, list[str]] = {
    "synthseg": ["method=synthseg"],
    "real": ["method=real"],
    "mixed": ["method=mixed"],
    "finetune": ["method=finetune"],
    "l2s-parametric": ["method=learn2synth", "augmenter.kind=parametric"],
    "l2s-residual": ["method=learn2synth", "augmenter.kind=residual", "augmenter.lr=0.001"],
    # the seed baselines (configs/gan_synth.yaml, configs/feature_da.yaml): a pix2pix GAN trained on the real
    # pairs synthesizes more (its pretraining counts in the steps), and feature-level adversarial adaptation from
    # the synthetic source to the real images as unlabeled target
    "gan_synth": ["method=gan_synth"],
    "feature_da": ["method=feature_da"],
}
BASELINE = "synthseg"


@dataclass
class TestSet:
    """Whole 2D test images (float arrays) with their class-index references; one case per image."""

    name: str
    images: list[np.ndarray]
    labels: list[np.ndarray]
    cases: list[str]
    spacing: tuple[float, ...] | None = None
    # the volume (subject) of each case when the cases are slices of volumes: Dice is then also reported per
    # class over each whole volume, the papers' protocol (None: each case is its own image)
    volumes: list[str] | None = None
    # the models were trained at 1/zoom of the test images' resolution: each image is block-averaged by
    # ``zoom`` before prediction and the probabilities are upsampled back, so scores stay at full resolution
    zoom: int = 1


@dataclass
class Result:
    method: str
    tag: str  # e.g. "K=5"
    seconds: float
    per_case: dict[str, list[dict]] = field(default_factory=dict)  # test set -> rows {case, dice, hd95 per class}
    per_volume: dict[str, list[dict]] = field(default_factory=dict)  # test set -> rows {volume, dice per class}
    predictions: dict[str, list[np.ndarray]] = field(default_factory=dict)
    learned: dict[str, float] = field(default_factory=dict)


def add_common_args(parser, default_out: str) -> None:
    parser.add_argument("--data", default="../shared/data", help="the shared data folder (read only)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny steps, small crops, few test cases")
    parser.add_argument("--steps", type=int, help="override the step budget of every method")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (config key 'threads')")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE",
                        help="extra config override for every method (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=default_out, help="markdown report (figure beside it, same stem)")
    parser.add_argument("--work", help="keep runs and prepared data here instead of a temporary folder")


def command_line(script: str, argv=None) -> str:
    """The command that reproduces this run: the script (relative to the repository) and its arguments."""
    argv = sys.argv[1:] if argv is None else argv
    script = Path(script).resolve()
    script = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    return ".venv/bin/python " + " ".join(shlex.quote(str(a)) for a in [script, *argv])


def report_head(title: str, quick: bool, command: str) -> list[str]:
    """The first lines of every benchmark report: title, the quick-run warning, the command in a code block."""
    return [f"# {title}", "", *(["**Quick run** (see command): numbers are a smoke test, not a result.", ""]
                                if quick else []),
            "Command (from the repository root):", "", "```", command, "```", ""]


def seed_list(args) -> list[int]:
    """``--seeds`` as integers, else ``[--seed]``."""
    return [int(v) for v in args.seeds.split(",") if v.strip()] if args.seeds else [args.seed]


def method_list(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    return names


def write_manifest(path: Path, pairs: list[tuple[Path, Path, str]]) -> Path:
    """A YAML manifest (``pairs:``) of absolute (image, label, subject) paths."""
    import yaml

    rows = [{"image": str(i), "label": str(lab), "subject": s} for i, lab, s in pairs]
    path.write_text(yaml.safe_dump({"pairs": rows}, sort_keys=False))
    return path


def link(target: Path, path: Path) -> None:
    """Symlink ``path`` -> ``target``, replacing an earlier link (a ``--work`` folder reused by a resumed run)."""
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def save_npz(path: Path, **arrays) -> Path:
    from learn2synth.io import write_npz

    write_npz(path, arrays)
    return path


def run_methods(methods: list[str], build_config, tests: list[TestSet], work: Path, n_classes: int,
                tag: str = "", progress: bool = False, fixed: dict | None = None) -> list[Result]:
    """Train each method (``build_config(method) -> TrainConfig``), then segment and score every test set.

    ``fixed`` maps method names to existing checkpoints that are scored as they are (no training), e.g. the
    model an adaptation starts from."""
    import torch

    from learn2synth.inference import load_model
    from learn2synth.runlog import learned_estimate

    results = []
    for method in methods:
        if method in (fixed or {}):
            run_dir, seconds = Path(fixed[method]), 0.0
        else:
            config = build_config(method)
            run_dir = work / "runs" / f"{tag or 'run'}_{method}".replace("=", "")
            print(f"[{tag}] {method}: {config.steps} steps ...", flush=True)
            seconds = _train_once(config, run_dir, progress)
            if config.threads:
                torch.set_num_threads(config.threads)
        model = load_model(run_dir, device="cpu")
        result = Result(method, tag, seconds, learned=learned_estimate(run_dir / "metrics.csv")
                        if run_dir.is_dir() else {})
        for test in tests:
            preds, rows = [], []
            for image, ref, case in zip(test.images, test.labels, test.cases, strict=True):
                pred = predict_zoomed(model, image, test.zoom).argmax(0)
                preds.append(pred.astype(np.uint8))
                rows.append(score(pred, ref, n_classes, case, test.spacing))
            result.per_case[test.name] = rows
            result.predictions[test.name] = preds
            if test.volumes is not None:
                result.per_volume[test.name] = volume_scores(preds, test, n_classes)
        # the headline of the reports: Dice over whole volumes when the test sets have them, else per case
        dice = {t: np.mean([r["dice"] for r in result.per_volume[t]]) if t in result.per_volume
                else np.nanmean([r["dice"] for r in rows]) for t, rows in result.per_case.items()}
        kind = "volume Dice" if result.per_volume else "Dice per case"
        print(f"[{tag}] {method}: {seconds:.0f} s, {kind} " + ", ".join(f"{t} {v:.3f}" for t, v in dice.items()),
              flush=True)
        results.append(result)
    return results


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` (2D) averaged over ``factor`` x ``factor`` blocks (trailing rows/columns that do not fill a
    block are dropped): the intensity a detector ``factor`` times coarser would record."""
    h, w = (s // factor * factor for s in image.shape)
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def block_mode(labels: np.ndarray, factor: int) -> np.ndarray:
    """``labels`` (2D) reduced to the most frequent value of each ``factor`` x ``factor`` block (ties go to
    the smaller value), so thin structures are kept only where they fill the block's plurality."""
    import torch

    from learn2synth.generative.data import resize_label

    h, w = (s // factor * factor for s in labels.shape)
    values, index = np.unique(labels[:h, :w], return_inverse=True)
    index = torch.from_numpy(index.reshape(1, h, w).astype(np.int64))
    return values[resize_label(index, (h // factor, w // factor), len(values))[0].numpy()].astype(labels.dtype)


def predict_zoomed(model, image: np.ndarray, zoom: int = 1) -> np.ndarray:
    """Class probabilities ``(n_classes, *image.shape)`` of a 2D image by a model trained at 1/``zoom`` of its
    resolution: predicted on the block-averaged image, probabilities upsampled bilinearly to the full shape."""
    import torch

    from learn2synth.inference import predict_array

    if zoom == 1:
        return predict_array(model, image, batch_size=1)
    probs = torch.from_numpy(predict_array(model, block_mean(image, zoom), batch_size=1))[None]
    full = torch.nn.functional.interpolate(probs, size=image.shape, mode="bilinear", align_corners=False)
    return full[0].numpy()


def _train_once(config, run_dir: Path, progress: bool) -> float:
    """Train into ``run_dir`` unless a finished run is there (an interrupted one resumes), so an experiment
    killed midway continues with the same ``--work`` folder; returns the training seconds of the run."""
    from learn2synth.train import train

    record = run_dir / "train_seconds.json"
    if record.exists():
        return json.loads(record.read_text())["seconds"]
    t0 = time.perf_counter()
    train(config, run_dir, resume=True, progress=progress, tensorboard=False)
    seconds = time.perf_counter() - t0
    record.write_text(json.dumps({"seconds": seconds}))
    return seconds


def score(pred: np.ndarray, ref: np.ndarray, n_classes: int, case: str, spacing=None) -> dict:
    """Per-case row: Dice per class, the case Dice (mean over the classes present in either map), HD95 per
    class and the case HD95 (mean over classes with a finite distance), via learn2synth.metrics."""
    from learn2synth.metrics import label_metrics

    per = label_metrics(pred, ref, list(range(1, n_classes)), spacing)
    dices = np.array([per[c]["dice"] for c in per], dtype=float)
    hd = np.array([per[c]["hd95"] for c in per], dtype=float)
    row = {"case": case, "dice": float(np.nanmean(dices)) if np.isfinite(dices).any() else float("nan"),
           "hd95": float(np.mean(hd[np.isfinite(hd)])) if np.isfinite(hd).any() else float("nan"),
           "hd95_inf": int(np.isinf(hd).sum())}
    for c in per:
        row[f"dice_{c}"] = per[c]["dice"]
        row[f"hd95_{c}"] = per[c]["hd95"]
    return row


def volume_scores(preds: list[np.ndarray], test: TestSet, n_classes: int) -> list[dict]:
    """Dice per class over each whole volume (its slices stacked), and the mean over the classes."""
    from learn2synth.evaluate import score_volumes

    rows = []
    for volume in dict.fromkeys(test.volumes):
        index = [i for i, v in enumerate(test.volumes) if v == volume]
        pred = np.stack([preds[i] for i in index])
        ref = np.stack([test.labels[i] for i in index])
        scores = score_volumes(pred, ref, list(range(1, n_classes)))
        rows.append({"volume": volume, "dice": scores["mean"]["dice"],
                     **{f"dice_{c}": scores[c]["dice"] for c in range(1, n_classes)}})
    return rows


def volume_table(results: list[Result], test: str, class_names: list[str]) -> str:
    """Markdown: per method (and tag) and volume, Dice per class over the whole volume and its mean (headline)."""
    header = ["setting", "method", "volume", "volume Dice (mean over classes)", *[f"Dice {c}" for c in class_names],
              "Δ vs synthseg"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base = {r.tag: r for r in results if r.method == BASELINE}
    for r in results:
        b = base.get(r.tag)
        for k, row in enumerate(r.per_volume.get(test, [])):
            delta = row["dice"] - b.per_volume[test][k]["dice"] if b is not None and b is not r else float("nan")
            lines.append("| " + " | ".join([
                r.tag or "-", r.method, row["volume"], f"**{row['dice']:.3f}**",
                *[f"{row[f'dice_{c}']:.3f}" for c in range(1, len(class_names) + 1)],
                "-" if not math.isfinite(delta) else f"{delta:+.3f}"]) + " |")
    return "\n".join(lines)


def _fmt(mean: float, sd: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if math.isfinite(sd) else f"{mean:.{digits}f}"


def _p(value: float) -> str:
    return "-" if not math.isfinite(value) else (f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}")


def results_table(results: list[Result], test: str, class_names: list[str]) -> str:
    """Markdown: per method (and tag) Dice mean ± sd over cases, per-class Dice, HD95, Wilcoxon p vs synthseg."""
    from learn2synth.metrics import paired_comparison, summarize

    header = ["setting", "method", "n", "Dice (mean ± sd)", *[f"Dice {c}" for c in class_names],
              "HD95 (mean ± sd)", "HD95 inf", "Δ Dice vs synthseg", "Wilcoxon p (Dice)", "Wilcoxon p (HD95)",
              "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base = {r.tag: r for r in results if r.method == BASELINE}
    for r in results:
        rows = r.per_case.get(test)
        if rows is None:
            continue
        dice = summarize([x["dice"] for x in rows])
        hd = summarize([x["hd95"] for x in rows])
        per_class = [summarize([x[f"dice_{c}"] for x in rows])["mean"] for c in range(1, len(class_names) + 1)]
        n_inf = sum(x["hd95_inf"] for x in rows)
        delta, p_dice, p_hd = float("nan"), float("nan"), float("nan")
        b = base.get(r.tag)
        if b is not None and b is not r and len(rows) > 1:
            brows = b.per_case[test]
            cd = paired_comparison([x["dice"] for x in brows], [x["dice"] for x in rows])
            ch = paired_comparison([x["hd95"] for x in brows], [x["hd95"] for x in rows])
            delta, p_dice, p_hd = cd["mean_diff"], cd["p_value"], ch["p_value"]
        lines.append("| " + " | ".join([
            r.tag or "-", r.method, str(len(rows)), _fmt(dice["mean"], dice["sd"]),
            *[f"{v:.3f}" if math.isfinite(v) else "n/a" for v in per_class], _fmt(hd["mean"], hd["sd"], 1),
            str(n_inf), "-" if not math.isfinite(delta) else f"{delta:+.3f}", _p(p_dice), _p(p_hd),
            f"{r.seconds:.0f}"]) + " |")
    return "\n".join(lines)


def summary_table(results: list[Result], test: str, base: str = "synthseg") -> str:
    """Dice mean over seeds (± sd over seeds) per method on ``test``, and its difference from ``base``: Dice over
    whole volumes when the test set has volumes (one value per volume and seed), else each run's mean Dice over
    the test cases (one value per seed). The sd is over trainings, the spread that decides whether two methods
    differ; a Wilcoxon test over the cases of one training each does not see it."""
    by_method: dict[str, list[float]] = {}
    kind = "volume Dice"
    for r in results:
        if r.per_volume.get(test):
            by_method.setdefault(r.method, []).extend(row["dice"] for row in r.per_volume[test])
        elif r.per_case.get(test):
            kind = "Dice (mean over cases)"
            by_method.setdefault(r.method, []).append(float(np.nanmean([row["dice"] for row in r.per_case[test]])))
    ref = np.mean(by_method.get(base, [np.nan]))
    lines = [f"| method | runs | {kind} (mean ± sd over seeds) | min - max | Δ vs {base} (points) |",
             "|---|---|---|---|---|"]
    for method, values in by_method.items():
        v = np.array(values)
        lines.append(f"| {method} | {len(v)} | {v.mean():.3f} ± {v.std():.3f} | {v.min():.3f} - {v.max():.3f} | "
                     f"{100 * (v.mean() - ref):+.1f} |")
    return "\n".join(lines)


def learned_table(results: list[Result]) -> str:
    rows = [r for r in results if r.learned]
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r.learned))
    lines = ["| setting | method | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    for r in rows:
        lines.append(f"| {r.tag or '-'} | {r.method} | " + " | ".join(f"{r.learned.get(k, float('nan')):.4g}"
                                                                       for k in keys) + " |")
    return "\n".join(lines)


def figure(path: Path, results: list[Result], test: TestSet, picks: list[int], title: str = "",
           crop=None, transpose: bool = False) -> Path:
    """Rows: the picked test cases; columns: image, reference, then each method's prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2 + len(results)
    fig, axes = plt.subplots(len(picks), cols, figsize=(1.9 * cols, 1.9 * len(picks) + 0.4), squeeze=False)
    vmax = max(9, max(int(t.max()) for t in test.labels))
    for row, i in enumerate(picks):
        def view(a):
            a = a[crop] if crop is not None else a
            return a.T if transpose else a

        panels = [("image", view(test.images[i]), "gray"), ("reference", view(test.labels[i]), "tab10")]
        panels += [(f"{r.method}\n{r.per_case[test.name][i]['dice']:.2f}", view(r.predictions[test.name][i]),
                    "tab10") for r in results]
        for col, (name, array, cmap) in enumerate(panels):
            ax = axes[row, col]
            ax.axis("off")
            if cmap == "gray":
                ax.imshow(array, cmap="gray", interpolation="nearest")
            else:
                ax.imshow(array, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(name if row == 0 or col >= 2 else "", fontsize=7)
        axes[row, 0].text(-0.05, 0.5, test.cases[i], transform=axes[row, 0].transAxes, rotation=90, fontsize=7,
                          ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def environment() -> str:
    import torch

    return (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), Python {platform.python_version()}, "
            f"{platform.machine()}; machine shared with other jobs, so times are indicative")


def dump_json(path: Path, results: list[Result], extra: dict) -> None:
    """Per-case rows and timings, for re-analysis (written beside the report only with --work)."""
    data = {"extra": extra, "results": [{"method": r.method, "tag": r.tag, "seconds": r.seconds,
                                         "learned": r.learned, "per_case": r.per_case, "per_volume": r.per_volume}
                                        for r in results]}
    path.write_text(json.dumps(data, indent=1, default=float))
