"""Score predicted label maps against references, and compare two sets of predictions case by case.

Files are paired by name without the extension (``a.nii.gz`` with ``a.mgz``); posterior maps that
``learn2synth predict`` writes beside its label maps (``*_posteriors.*``) are skipped. For every case and
label: Dice, HD95 and ASSD in physical units, the voxel spacing read from the reference
(:mod:`learn2synth.metrics` documents the empty-structure conventions: NaN when the structure is in neither map,
Dice 0 and distances inf when it is in only one). Summaries give n, mean, sd and median of the finite values
per label and metric (``n_inf`` counts the cases whose distance is inf).

``--compare A B`` scores both folders on the cases all three folders share and tests B - A per label and
metric: paired Wilcoxon signed-rank test and paired Cohen's d, with box plots.

Outputs (``--out``, every file written atomically, none overwritten): ``metrics_per_case.csv``,
``summary.csv``, ``summary.md``; with ``--compare`` also ``comparison.csv``, ``comparison.md`` and
``boxplot_<metric>.png``.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import ConfigError, InputError
from .metrics import label_metrics, paired_comparison, summarize

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
    """Cases present in every folder, by name, and a note per folder on the files left unpaired.

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
    """A checked integer label map (2D when stored as one slice) and its voxel spacing."""
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
    return check_label_map(array, path), volume.spacing


def evaluate_case(pred_path: Path, ref_path: Path, labels=None) -> list[dict]:
    """Rows ``{case, label, dice, hd95, assd}`` of one prediction against its reference.

    ``labels`` defaults to the non-zero values of the reference. Spacing comes from the reference.
    """
    pred, _ = read_labels(pred_path)
    ref, spacing = read_labels(ref_path)
    if pred.shape != ref.shape:
        raise InputError(pred_path, f"prediction has shape {pred.shape} but its reference {ref_path} has shape "
                                    f"{ref.shape}")
    if labels is None:
        labels = [int(v) for v in np.unique(ref) if v != 0]
    case = case_name(ref_path)
    return [{"case": case, "label": label, **values}
            for label, values in label_metrics(pred, ref, labels, spacing).items()]


def evaluate_pairs(pairs, labels=None, progress: bool = True) -> tuple[dict[str, list[dict]], list[InputError]]:
    """Score each prediction folder of ``pairs`` (from :func:`pair_files`, references last).

    Without ``labels``, every non-zero value found in any reference is scored in every case (a label missing
    from one reference then counts by the empty-structure conventions). Bad files are collected, not raised.

    Returns
    -------
    rows : dict
        Per prediction folder index (as str, ``"0"``, ``"1"``): the rows of every case.
    failures : list of InputError
    """
    from tqdm import tqdm

    failures: list[InputError] = []
    if labels is None:
        found = set()
        for _, paths in pairs:
            try:
                found |= {int(v) for v in np.unique(read_labels(paths[-1])[0]) if v != 0}
            except InputError as e:
                failures.append(e)
        labels = sorted(found)
        if not labels and not failures:
            raise InputError(pairs[0][1][-1].parent, "the references hold no non-zero label; pass --labels")
    n_pred = len(pairs[0][1]) - 1
    rows: dict[str, list[dict]] = {str(i): [] for i in range(n_pred)}
    bad = {e.path for e in failures}
    for _, paths in tqdm(pairs, desc="evaluate", unit="case", disable=not progress or len(pairs) < 2):
        if str(paths[-1]) in bad:
            continue
        for i in range(n_pred):
            try:
                rows[str(i)] += evaluate_case(paths[i], paths[-1], labels)
            except InputError as e:
                if str(e) not in map(str, failures):  # a bad reference is named once, not once per folder
                    failures.append(e)
    return rows, failures


def summary_rows(rows: list[dict]) -> list[dict]:
    """n, n_inf, mean, sd, median per label and metric."""
    out = []
    for label in sorted({r["label"] for r in rows}):
        for metric in METRICS:
            values = [r[metric] for r in rows if r["label"] == label]
            out.append({"label": label, "metric": metric, **summarize(values)})
    return out


def comparison_rows(rows_a: list[dict], rows_b: list[dict]) -> list[dict]:
    """Paired statistics of B - A per label and metric, over the cases scored in both."""
    a = {(r["case"], r["label"]): r for r in rows_a}
    b = {(r["case"], r["label"]): r for r in rows_b}
    keys = sorted(set(a) & set(b))
    out = []
    for label in sorted({k[1] for k in keys}):
        for metric in METRICS:
            cases = [k for k in keys if k[1] == label]
            stats = paired_comparison([a[k][metric] for k in cases], [b[k][metric] for k in cases])
            out.append({"label": label, "metric": metric, **stats})
    return out


def to_csv(rows: list[dict]) -> str:
    """CSV text of rows (floats with 6 significant digits; nan and inf spelled out)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    return buffer.getvalue()


def to_markdown(rows: list[dict]) -> str:
    from .report import markdown_table

    header = list(rows[0]) if rows else []
    return markdown_table(header, [[r[k] for k in header] for r in rows]) + "\n"


def box_plots(rows: dict[str, list[dict]], out: Path) -> list[Path]:
    """One PNG per metric: a box per label and method (names are the keys of ``rows``)."""
    from .report import _pyplot, _save

    plt = _pyplot()
    labels = sorted({r["label"] for method in rows.values() for r in method})
    written = []
    for metric in METRICS:
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
        ax.set_xlabel("label")
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


def _write_outputs(out: Path, texts: dict[str, str], plots: dict[str, list[dict]] | None) -> list[Path]:
    from .io import atomic_path

    names = list(texts) + ([f"boxplot_{m}.png" for m in METRICS] if plots else [])
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    existing = [n for n in names if (out / n).exists()]
    if existing:
        raise InputError(out / existing[0], "already exists; refusing to overwrite it (choose another --out)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in texts.items():
        with atomic_path(out / name, Path(name).suffix) as tmp:
            tmp.write_text(text)
        written.append(out / name)
    if plots:
        written += box_plots(plots, out)
    return written


def run_evaluate(args) -> int:
    """``learn2synth evaluate``: print the summary (or comparison) table; write tables and plots to ``--out``."""
    labels = parse_labels(args.labels)
    folders = [args.pred] if args.pred else list(args.compare)
    pairs, notes = pair_files(*folders, args.ref)
    for note in notes:
        print(f"learn2synth evaluate: warning: {note}", file=sys.stderr)
    rows, failures = evaluate_pairs(pairs, labels, progress=not args.quiet)
    if failures:
        for error in failures:
            print(f"learn2synth evaluate: error: {error}", file=sys.stderr)
        print(f"evaluate: {len(failures)} file(s) could not be scored (listed above); no table written",
              file=sys.stderr)
        return 2
    names = _method_names(folders)
    per_case = [{"method": names[int(i)], **r} for i, method_rows in rows.items() for r in method_rows]
    summary = [{"method": names[int(i)], **s} for i, method_rows in rows.items() for s in summary_rows(method_rows)]
    texts = {"metrics_per_case.csv": to_csv(per_case), "summary.csv": to_csv(summary),
             "summary.md": to_markdown(summary)}
    table = texts["summary.md"]
    plots = None
    if args.compare:
        comparison = comparison_rows(rows["0"], rows["1"])
        texts["comparison.csv"] = to_csv(comparison)
        texts["comparison.md"] = (f"B - A with A = {names[0]}, B = {names[1]}; paired over cases, "
                                  "Wilcoxon signed-rank (two-sided) and Cohen's d = mean / sd of differences\n\n"
                                  + to_markdown(comparison))
        table += "\n" + texts["comparison.md"]
        plots = {names[int(i)]: r for i, r in rows.items()}
    print(table, end="")
    if args.out:
        written = _write_outputs(Path(args.out), texts, plots)
        print(f"evaluate: {len(pairs)} case(s); wrote {', '.join(p.name for p in written)} to {args.out}")
    return 0


def _method_names(folders) -> list[str]:
    """Folder names (the full paths given when the names coincide)."""
    names = [Path(f).name or str(f) for f in folders]
    return names if len(set(names)) == len(names) else [str(f) for f in folders]
