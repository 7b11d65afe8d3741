"""Score predicted label maps against references, and compare two sets of predictions case by case.

Files are paired by name without the extension (``a.nii.gz`` with ``a.mgz``); posterior maps that
``learn2synth predict`` writes beside its label maps (``*_posteriors.*``) are skipped. The headline numbers are
per subject, as SynthSeg and Learn2Synth report them: every file is one case and each label is scored over the
whole file (a 3D volume as one volume, never slice by slice): Dice, HD95 and ASSD in physical units, the voxel
spacing read from the reference, and a ``mean`` row per case (the mean over the scored labels,
:func:`learn2synth.metrics.mean_over_labels`). :mod:`learn2synth.metrics` documents the empty-structure
conventions: NaN when the structure is in neither map, Dice 0 and distances inf when it is in only one.
Summaries give n, mean, sd (``-`` when n < 2) and median of the finite values per label and metric over the
cases (``n_inf`` counts the cases whose distance is inf).

``per_slice`` (``--per-slice AXIS``) adds per-slice Dice computed from the volumes: for each label, the slices
where the reference holds it are scored and averaged; slices where only the prediction holds it are false
positives, counted apart (``fp_slices``) instead of entering the average as 0.

``--compare A B`` scores both folders on the cases all folders share and tests B - A per label and metric
(and the mean over labels): paired Wilcoxon signed-rank test and paired Cohen's d, over volumes, or over slices
with ``--per-slice``; box plots of the per-volume values.

``--mask`` restricts scoring to the voxels inside a mask (non-zero): voxels outside are set to background in
both the prediction and the reference (a structure cut by the mask gets a surface at the mask's edge in both).

Outputs (``--out``, every file written atomically, none overwritten): ``metrics_per_case.csv``,
``summary.csv``, ``summary.md``; with ``--per-slice`` also ``per_slice.csv`` (every scored or false-positive
slice), ``per_slice_summary.csv`` and ``per_slice.md``; with ``--compare`` also ``comparison.csv``,
``comparison.md`` and ``boxplot_<metric>.png``.

Python API without the CLI: :func:`score_volumes` and :func:`per_slice_scores` on arrays.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import ConfigError, InputError
from .metrics import label_metrics, mean_over_labels, paired_comparison, slice_dice, summarize

METRICS = ("dice", "hd95", "assd")
_SKIPPED_SUFFIX = "_posteriors"


def case_name(path: str | os.PathLike) -> str:
    """The name a file is paired by: its file name without the (supported) extension.

    Examples
    --------
    >>> case_name("preds/OAS1_0002.nii.gz"), case_name("refs/OAS1_0002.MGZ")
    ('OAS1_0002', 'OAS1_0002')
    """
    from .io import supported_extension

    name = Path(path).name
    return name[: len(name) - len(supported_extension(name) or "")]


def _cases(folder: str | os.PathLike) -> dict[str, Path]:
    from .io import list_files

    files = {}
    for path in list_files(folder):
        name = case_name(path)
        if name.endswith(_SKIPPED_SUFFIX):
            continue
        if name in files:
            raise InputError(path, f"two files are named {name!r} (with {files[name].name}); cannot pair them")
        files[name] = path
    if not files:
        raise InputError(folder, "holds no label maps (only posterior maps)")
    return files


def pair_files(*folders: str | os.PathLike) -> tuple[list[tuple[str, list[Path]]], list[str]]:
    """Cases present in every folder, by name, and a note per folder on the files left unpaired. When every
    argument is a file, they are one case whatever their names (a prediction and its reference).

    Returns
    -------
    pairs : list of (case, [path in each folder])
        Sorted by case name.
    notes : list of str
        ``"refs: 2 file(s) without a partner, skipped: a, b"``, one per folder that has such files.

    Raises
    ------
    InputError
        A folder is missing or empty, or no case is in every folder.
    """
    if folders and all(Path(f).is_file() for f in folders):  # one file each (e.g. a prediction and its
        return [(case_name(Path(folders[0])), [Path(f) for f in folders])], []  # reference): one case, any names
    listed = [_cases(f) for f in folders]
    common = sorted(set.intersection(*(set(c) for c in listed)))
    notes = []
    for folder, cases in zip(folders, listed, strict=True):
        extra = sorted(set(cases) - set(common))
        if extra:
            shown = ", ".join(extra[:5]) + (", ..." if len(extra) > 5 else "")
            notes.append(f"{folder}: {len(extra)} file(s) without a partner, skipped: {shown}")
    if not common:
        raise InputError(folders[0], f"no file has a namesake in {', '.join(map(str, folders[1:]))}; files are "
                                     "paired by name without extension")
    return [(name, [c[name] for c in listed]) for name in common], notes


def read_labels(path: Path):
    """A checked integer label map (2D when stored as one slice) and its voxel spacing. A binary mask stored as
    0/255 (the usual PNG/GIF/TIFF mask) reads as 0/1, as training reads it, so it pairs with predictions."""
    from .io import check_label_map, read_image, squeeze_2d

    volume = read_image(path)
    array = volume.array
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and 1 in array.shape:  # a slice stored in 3D: its surface is its 2D outline
        volume = squeeze_2d(replace(volume, array=array))
        array = volume.array
    if array.ndim not in (2, 3):
        raise InputError(path, f"expected a 2D or 3D label map, got shape {volume.array.shape}")
    labels = check_label_map(array, path)
    if labels.size and labels.max() == 255 and np.isin(labels, (0, 255)).all():
        labels = (labels == 255).astype(labels.dtype)
    return labels, volume.spacing


def _inside(pred, ref, mask):
    """Prediction and reference with every voxel outside ``mask`` (where it is 0) set to background."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction has shape {pred.shape} but reference has shape {ref.shape}")
    if mask is None:
        return pred, ref
    mask = np.asarray(mask).astype(bool, copy=False)
    if mask.shape != ref.shape:
        raise ValueError(f"mask has shape {mask.shape} but reference has shape {ref.shape}")
    return np.where(mask, pred, 0), np.where(mask, ref, 0)


def score_volumes(pred, ref, labels, spacing=None, mask=None, distances: bool = False) -> dict:
    """Per-label scores of a label map over the whole array, and their mean over the labels.

    Parameters
    ----------
    pred, ref : np.ndarray
        Integer label maps of the same 2D or 3D shape.
    labels : iterable of int
        Label values to score.
    spacing : sequence of float, optional
        Voxel size (for the distances); voxels when None.
    mask : np.ndarray, optional
        Only voxels where the mask is non-zero are scored.
    distances : bool
        Also compute HD95 and ASSD (slow on 3D volumes: tens of seconds for a 160x192x224 brain).

    Returns
    -------
    dict
        ``{label: {"dice": ..., ["hd95": ..., "assd": ...]}, ..., "mean": {...}}``; ``"mean"`` is
        :func:`~learn2synth.metrics.mean_over_labels` of each metric.

    Examples
    --------
    >>> ref = np.array([[1, 1, 2, 2]]); pred = np.array([[1, 2, 2, 2]])
    >>> score_volumes(pred, ref, [1, 2])
    {1: {'dice': 0.6666666666666666}, 2: {'dice': 0.8}, 'mean': {'dice': 0.7333333333333334}}
    >>> score_volumes(pred, ref, [1, 2], mask=np.array([[0, 0, 1, 1]]))["mean"]
    {'dice': 1.0}
    """
    pred, ref = _inside(pred, ref, mask)
    scores: dict = label_metrics(pred, ref, labels, spacing, distances=distances)
    metrics = next(iter(scores.values()), {"dice": None})
    scores["mean"] = {m: mean_over_labels(s[m] for s in scores.values()) for m in metrics}
    return scores


def per_slice_scores(pred, ref, labels, axis: int, mask=None) -> dict:
    """Per-slice Dice of each label along ``axis``, from whole volumes.

    For each label, the slices where the reference holds it are scored; slices where only the prediction holds
    it are false positives, listed apart. ``"mean"``: in each slice where the reference holds any of the labels,
    the mean Dice of the labels it holds there; its false positives are the slices where the reference holds
    none of the labels and the prediction holds some.

    Returns
    -------
    dict
        ``{label: {"slices": int array, "dice": float array, "fp_slices": int array}, ..., "mean": {...}}``.

    Examples
    --------
    >>> ref = np.zeros((3, 2, 2), int); ref[0] = 1; ref[1, 0, 0] = 2
    >>> pred = ref.copy(); pred[0, 0] = 2; pred[2, 1, 1] = 1
    >>> s = per_slice_scores(pred, ref, [1, 2], axis=0)
    >>> s[1]["slices"], s[1]["dice"], s[1]["fp_slices"]
    (array([0]), array([0.66666667]), array([2]))
    >>> s["mean"]["slices"], s["mean"]["dice"].round(3), s["mean"]["fp_slices"]
    (array([0, 1]), array([0.667, 1.   ]), array([2]))
    """
    pred, ref = _inside(pred, ref, mask)
    dice, fp = zip(*(slice_dice(pred == label, ref == label, axis) for label in labels), strict=True)
    dice, fp = np.array(dice), np.array(fp)
    held = ~np.isnan(dice).all(0)
    mean = np.full(held.shape, np.nan)
    mean[held] = np.nanmean(dice[:, held], 0)
    out = {int(label): _slice_entry(d, f) for label, d, f in zip(labels, dice, fp, strict=True)}
    out["mean"] = _slice_entry(mean, ~held & fp.any(0))
    return out


def _slice_entry(dice: np.ndarray, false_positive: np.ndarray) -> dict:
    held = ~np.isnan(dice)
    return {"slices": np.flatnonzero(held), "dice": dice[held], "fp_slices": np.flatnonzero(false_positive)}


def check_label_sets(path, pred: np.ndarray, reference_labels) -> str | None:
    """Refuse a prediction none of whose labels is a reference label; a warning when some are not.

    Returns the warning (naming the labels found only in the prediction), or None when every predicted label is
    a reference label. An all-background prediction is a (bad) prediction, not a mismatch.

    Raises
    ------
    InputError
        The prediction holds non-zero labels and none of them is in ``reference_labels``.
    """
    predicted = {int(v) for v in np.unique(pred) if v != 0}
    reference = {int(v) for v in reference_labels}
    only = predicted - reference
    if not only:
        return None
    detail = (f"predicted labels {_set(predicted)}, reference labels {_set(reference)}; did predict write class "
              "indices instead of label values?")
    if not predicted & reference:
        raise InputError(path, f"no predicted label is a reference label: {detail}")
    return f"{path}: labels {_set(only)} appear only in the prediction ({detail})"


def _set(values) -> str:
    return "{" + ", ".join(map(str, sorted(values))) + "}"


def evaluate_case(pred_path: Path, ref_path: Path, labels=None, *, mask_path: Path | None = None,
                  reference_labels=None, distances: bool = True, axis: int | None = None) -> dict:
    """Score one prediction file against its reference (spacing from the reference).

    ``labels`` and ``reference_labels`` (the labels the prediction is checked against, see
    :func:`check_label_sets`) default to the non-zero values of the reference.

    Returns
    -------
    dict
        ``volume``: rows ``{case, label, dice[, hd95, assd]}``, the last with label ``"mean"``; ``slices``: rows
        ``{case, label, slice, dice, in_reference}`` with ``axis`` (``in_reference`` 0: a false-positive slice,
        Dice 0, left out of averages); ``warning``: str or None.
    """
    pred, _ = read_labels(pred_path)
    ref, spacing = read_labels(ref_path)
    if pred.shape != ref.shape:
        raise InputError(pred_path, f"prediction has shape {pred.shape} but its reference {ref_path} has shape "
                                    f"{ref.shape}")
    mask = None if mask_path is None else read_labels(mask_path)[0]
    if mask is not None and mask.shape != ref.shape:
        raise InputError(mask_path, f"mask has shape {mask.shape} but the reference has shape {ref.shape}")
    if axis is not None and not 0 <= axis < ref.ndim:
        raise InputError(ref_path, f"--per-slice {axis}: the label map is {ref.ndim}D (shape {ref.shape})")
    if labels is None:
        labels = [int(v) for v in np.unique(ref) if v != 0]
    warning = check_label_sets(pred_path, pred, labels if reference_labels is None else reference_labels)
    case = case_name(ref_path)
    scores = score_volumes(pred, ref, labels, spacing, mask, distances)
    slices = [] if axis is None else _slice_rows(case, per_slice_scores(pred, ref, labels, axis, mask))
    return {"volume": [{"case": case, "label": k, **v} for k, v in scores.items()], "slices": slices,
            "warning": warning}


def _slice_rows(case: str, scores: dict) -> list[dict]:
    rows = []
    for label, s in scores.items():
        scored = [(int(i), float(d), 1) for i, d in zip(s["slices"], s["dice"], strict=True)]
        rows += [{"case": case, "label": label, "slice": i, "dice": d, "in_reference": held}
                 for i, d, held in sorted(scored + [(int(i), 0.0, 0) for i in s["fp_slices"]])]
    return rows


def _reference_labels(cases) -> tuple[list[int], list[InputError]]:
    """Every non-zero value found in any reference, and the references that could not be read."""
    found, failures = set(), []
    for _, _, ref, _ in cases:
        try:
            found |= {int(v) for v in np.unique(read_labels(ref)[0]) if v != 0}
        except InputError as e:
            failures.append(e)
    return sorted(found), failures


def evaluate_pairs(cases, labels=None, *, distances: bool = True, axis: int | None = None,
                   progress: bool = True) -> dict:
    """Score every prediction of ``cases``: ``(case, [prediction paths], reference path, mask path or None)``.

    Without ``labels``, every non-zero value found in any reference is scored in every case (a label missing
    from one reference then counts by the empty-structure conventions). Predictions are checked against the
    labels of all references and ``labels`` (:func:`check_label_sets`). Bad files are collected, not raised.

    Returns
    -------
    dict
        ``volume`` and ``slices``: per prediction folder, the rows of every case (:func:`evaluate_case`);
        ``warnings``: list of str; ``failures``: list of InputError.
    """
    from tqdm import tqdm

    reference_labels, failures = _reference_labels(cases)
    labels = reference_labels if labels is None else labels
    if not labels and not failures:
        raise InputError(cases[0][2].parent, "the references hold no non-zero label; pass --labels")
    expected = set(reference_labels) | set(labels)  # the labels a prediction is checked against
    n_pred = len(cases[0][1])
    out = {"volume": [[] for _ in range(n_pred)], "slices": [[] for _ in range(n_pred)], "warnings": [],
           "failures": failures}
    bad = {e.path for e in failures}
    for _, preds, ref, mask in tqdm(cases, desc="evaluate", unit="case", disable=not progress or len(cases) < 2):
        if str(ref) in bad:
            continue
        for i, pred in enumerate(preds):
            try:
                scored = evaluate_case(pred, ref, labels, mask_path=mask, reference_labels=expected,
                                       distances=distances, axis=axis)
            except InputError as e:
                if str(e) not in map(str, failures):  # a bad reference or mask is named once, not once per folder
                    failures.append(e)
                continue
            out["volume"][i] += scored["volume"]
            out["slices"][i] += scored["slices"]
            out["warnings"] += [scored["warning"]] if scored["warning"] else []
    return out


def _labels(rows: list[dict]) -> list:
    """The labels of ``rows`` in order of appearance (label values, then ``"mean"``)."""
    return list(dict.fromkeys(r["label"] for r in rows))


def _summary(values, keep_inf: bool = True) -> dict:
    """:func:`summarize`, with no sd (None, shown as ``-``) when fewer than 2 values are finite."""
    stats = summarize(values)
    stats["sd"] = stats["sd"] if stats["n"] > 1 else None
    return stats if keep_inf else {k: v for k, v in stats.items() if k != "n_inf"}


def summary_rows(rows: list[dict], metrics=METRICS) -> list[dict]:
    """n, n_inf, mean, sd, median per label (and the per-case mean over labels) and metric, over the cases."""
    return [{"label": label, "metric": metric, **_summary([r[metric] for r in rows if r["label"] == label])}
            for label in _labels(rows) for metric in metrics]


def slice_summary_rows(rows: list[dict]) -> list[dict]:
    """Per label: Dice over the slices where the reference holds it (all cases), and the false-positive slices."""
    return [{"label": label, "metric": "dice",
             **_summary([r["dice"] for r in rows if r["label"] == label and r["in_reference"]], keep_inf=False),
             "fp_slices": sum(1 for r in rows if r["label"] == label and not r["in_reference"])}
            for label in _labels(rows)]


def comparison_rows(rows_a: list[dict], rows_b: list[dict], metrics=METRICS) -> list[dict]:
    """Paired statistics of B - A per label and metric, over the units scored in both.

    Units are cases (volume rows) or, for per-slice rows, (case, slice) where the reference holds the label;
    per-slice rows also get the number of false-positive slices of A and of B.
    """
    a, b = _units(rows_a), _units(rows_b)
    keys = [k for k in a if k in b]
    out = []
    for label in _labels(rows_a):
        units = [k for k in keys if k[-1] == label]
        for metric in metrics:
            stats = paired_comparison([a[k][metric] for k in units], [b[k][metric] for k in units])
            out.append({"label": label, "metric": metric, **stats})
            if rows_a and "in_reference" in rows_a[0]:
                out[-1].update({f"fp_slices_{name}": sum(1 for r in rows if r["label"] == label
                                                         and not r["in_reference"])
                                for name, rows in (("a", rows_a), ("b", rows_b))})
    return out


def _units(rows: list[dict]) -> dict:
    return {(r["case"], r.get("slice"), r["label"]): r for r in rows if r.get("in_reference", 1)}


def to_csv(rows: list[dict]) -> str:
    """CSV text of rows (floats with 6 significant digits; nan and inf spelled out; None left empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else "" if v is None else v) for k, v in r.items()}
                     for r in rows)
    return buffer.getvalue()


def to_markdown(rows: list[dict]) -> str:
    """A markdown table of rows (None shown as ``-``)."""
    from .report import markdown_table

    header = list(rows[0]) if rows else []
    return markdown_table(header, [["-" if r[k] is None else r[k] for k in header] for r in rows]) + "\n"


def box_plots(rows: dict[str, list[dict]], out: Path, metrics=METRICS) -> list[Path]:
    """One PNG per metric: a box per label and method (names are the keys of ``rows``)."""
    from .report import _pyplot, _save

    plt = _pyplot()
    labels = _labels([r for method in rows.values() for r in method])
    written = []
    for metric in metrics:
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(labels) * len(rows), 3.6))
        positions, data, colours = [], [], []
        for j, label in enumerate(labels):
            for k, method in enumerate(rows.values()):
                values = np.array([r[metric] for r in method if r["label"] == label], dtype=float)
                positions.append(j * (len(rows) + 1) + k)
                data.append(values[np.isfinite(values)])
                colours.append(f"C{k}")
        boxes = ax.boxplot(data, positions=positions, widths=0.7, patch_artist=True)
        for patch, colour in zip(boxes["boxes"], colours, strict=True):
            patch.set_facecolor(colour)
            patch.set_alpha(0.5)
        ax.set_xticks([j * (len(rows) + 1) + (len(rows) - 1) / 2 for j in range(len(labels))],
                      [str(label) for label in labels])
        ax.set_xlabel("label (per volume)")
        ax.set_ylabel({"dice": "Dice", "hd95": "HD95 (mm)", "assd": "ASSD (mm)"}[metric])
        ax.legend([boxes["boxes"][k] for k in range(len(rows))], list(rows), fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        written.append(_save(fig, out / f"boxplot_{metric}.png"))
    return written


def parse_labels(text: str | None) -> list[int] | None:
    """``"1,2,3"`` -> [1, 2, 3].

    Examples
    --------
    >>> parse_labels("1, 2,41")
    [1, 2, 41]
    """
    if text is None:
        return None
    try:
        labels = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        labels = []
    if not labels or min(labels) < 0:
        raise ConfigError("--labels", f"expected comma-separated non-negative integers like 1,2,3; got {text!r}")
    return labels


@contextlib.contextmanager
def limit_threads(n: int | None):
    """Run with ``n`` torch threads (restored afterwards); None leaves the setting alone.

    The rest of evaluate's numpy/scipy work (label counts, MONAI's scipy distance transforms, the Wilcoxon
    test) runs on one thread, so ``n`` bounds the whole command.
    """
    if n is None:
        yield
        return
    if n < 1:
        raise ConfigError("--threads", f"expected a positive integer, got {n}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_outputs(out: Path, names: list[str]) -> None:
    """Refuse an ``--out`` that is a file or already holds one of ``names`` (nothing is overwritten)."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    existing = [n for n in names if (out / n).exists()]
    if existing:
        raise InputError(out / existing[0], "already exists; refusing to overwrite it (choose another --out)")


def _output_names(n_methods: int, axis: int | None, metrics) -> list[str]:
    """Every file ``evaluate --out`` may write for these arguments (checked before any scoring)."""
    names = ["metrics_per_case.csv", "summary.csv", "summary.md"]
    if axis is not None:
        names += ["per_slice.csv", "per_slice_summary.csv", "per_slice.md"]
    if n_methods > 1:
        names += ["comparison.csv", "comparison.md", *[f"boxplot_{m}.png" for m in metrics]]
    return names


def _write_outputs(out: Path, texts: dict[str, str], plots: dict[str, list[dict]] | None, metrics) -> list[Path]:
    from .io import atomic_path

    names = list(texts) + ([f"boxplot_{m}.png" for m in metrics] if plots else [])
    _check_outputs(out, names)  # again: something may have appeared while scoring
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in texts.items():
        with atomic_path(out / name, Path(name).suffix) as tmp:
            tmp.write_text(text)
        written.append(out / name)
    if plots:
        written += box_plots(plots, out, metrics)
    return written


def _cases_to_score(args) -> tuple[list, list[str], list[str]]:
    """``(case, [predictions], reference, mask)`` for every case in all folders; notes; prediction folders."""
    folders = [args.pred] if args.pred else list(args.compare)
    mask = Path(args.mask) if args.mask else None
    if mask is not None and not mask.exists():
        raise InputError(mask, "no such file or folder")
    mask_dir = [mask] if mask is not None and mask.is_dir() else []
    pairs, notes = pair_files(*folders, *mask_dir, args.ref)
    n = len(folders)
    cases = [(name, paths[:n], paths[-1], paths[n] if mask_dir else mask) for name, paths in pairs]
    return cases, notes, folders


def _report_failures(failures: list[InputError]) -> int:
    for error in failures:
        print(f"learn2synth evaluate: error: {error}", file=sys.stderr)
    if len(failures) > 1:
        print(f"evaluate: {len(failures)} file(s) could not be scored (listed above); no table written",
              file=sys.stderr)
    return 2


def run_evaluate(args) -> int:
    """``learn2synth evaluate``: print the summary (and comparison) tables; write tables and plots to ``--out``."""
    labels = parse_labels(args.labels)
    if args.per_slice is not None and args.per_slice < 0:
        raise ConfigError("--per-slice", f"expected an array axis 0, 1 or 2, got {args.per_slice}")
    metrics = ("dice",) if args.no_distances else METRICS
    if args.out:  # before minutes of scoring, not after
        _check_outputs(Path(args.out), _output_names(1 if args.pred else len(args.compare), args.per_slice, metrics))
    with limit_threads(args.threads):
        cases, notes, folders = _cases_to_score(args)
        for note in notes:
            print(f"learn2synth evaluate: warning: {note}", file=sys.stderr)
        result = evaluate_pairs(cases, labels, distances=not args.no_distances, axis=args.per_slice,
                                progress=not args.quiet)
        for warning in result["warnings"]:
            print(f"learn2synth evaluate: WARNING: {warning}", file=sys.stderr)
        if result["failures"]:
            return _report_failures(result["failures"])
        texts, plots = _tables(result, _method_names(folders), metrics, args.per_slice, len(cases))
        print("\n".join(texts[name] for name in ("summary.md", "per_slice.md", "comparison.md") if name in texts),
              end="")
        if args.out:
            written = _write_outputs(Path(args.out), texts, plots, metrics)
            print(f"evaluate: {len(cases)} case(s); wrote {', '.join(p.name for p in written)} to {args.out}")
    return 0


def _tables(result: dict, names: list[str], metrics, axis: int | None, n_cases: int):
    """The output files' texts (tables with a caption line) and the box plots' data (None without --compare)."""
    def tagged(rows_of, fn=None):
        return [{"method": names[i], **r} for i, rows in enumerate(rows_of) for r in (fn(rows) if fn else rows)]

    volume, slices = result["volume"], result["slices"]
    summary = tagged(volume, lambda rows: summary_rows(rows, metrics))
    texts = {"metrics_per_case.csv": to_csv(tagged(volume)), "summary.csv": to_csv(summary),
             "summary.md": f"Per volume, over {n_cases} case(s): each label scored over the whole volume; "
                           f"mean = each case's mean over the scored labels\n\n{to_markdown(summary)}"}
    if axis is not None:
        per_slice = tagged(slices, slice_summary_rows)
        texts |= {"per_slice.csv": to_csv(tagged(slices)), "per_slice_summary.csv": to_csv(per_slice),
                  "per_slice.md": f"Per slice along axis {axis}, pooled over {n_cases} case(s): Dice over the "
                                  "slices where the reference holds the label; fp_slices = slices where only the "
                                  f"prediction holds it (not averaged in)\n\n{to_markdown(per_slice)}"}
    if len(names) < 2:
        return texts, None
    units = volume if axis is None else slices
    comparison = comparison_rows(*units, metrics if axis is None else ("dice",))
    texts["comparison.csv"] = to_csv(comparison)
    texts["comparison.md"] = _comparison_caption(names, axis, n_cases) + "\n\n" + to_markdown(comparison)
    return texts, {name: rows for name, rows in zip(names, volume, strict=True)}


def _comparison_caption(names: list[str], axis: int | None, n_cases: int) -> str:
    """What is tested over which unit, and a note when too few volumes can ever give p < 0.05."""
    test = "Wilcoxon signed-rank (two-sided) and Cohen's d = mean / sd of the paired differences"
    if axis is not None:
        return (f"B - A with A = {names[0]}, B = {names[1]}; unit: slices along axis {axis} of {n_cases} "
                f"volume(s), per label the slices where the reference holds it (n); {test}. Slices of one volume "
                "are not independent, so p values over slices are optimistic.")
    caption = (f"B - A with A = {names[0]}, B = {names[1]}; unit: volumes (subjects), n = {n_cases} paired; "
               f"{test}.")
    if n_cases < 6:
        caption += (f"\nNote: with {n_cases} paired volumes the Wilcoxon test cannot reach p < 0.05 (smallest "
                    f"two-sided p = {2 / 2 ** n_cases:.3g}); use --per-slice AXIS to test over slices.")
    return caption


def _method_names(folders) -> list[str]:
    """Folder names (the full paths given when the names coincide); a single file by its path as given, since its
    name is the case's (``adapted/0002.nii.gz`` and ``plain/0002.nii.gz`` printed alike as ``0002.nii.gz``)."""
    names = [str(f) if Path(f).is_file() else Path(f).name or str(f) for f in folders]
    return names if len(set(names)) == len(names) else [str(f) for f in folders]
