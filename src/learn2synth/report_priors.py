"""The learned synthesis priors of a run (``augmenter.kind: learned_priors``): a table and a figure.

``priors_table(run_folder)`` reads the newest checkpoint and returns one row per intensity class: the learned
(or, when not learned, configured) GMM mean and std ranges. ``plot_priors(run_folder)`` draws, per target class,
the intensity histogram of the real training images beside that of images synthesized with the learned priors
(both after the training's normalization, so they are comparable; the GMM ranges themselves are in the
synthesis's units before its min-max normalization). Training writes both (``learned_priors.md``/``.png``) into
the run folder when it ends; :func:`learn2synth.report_demo.report_run` writes them for a finished run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_checkpoint, resolve_checkpoint
from .io.atomic import atomic_path


def priors_table(run_folder: str | Path, names: list[str] | None = None) -> list[dict]:
    """Rows ``{"class", "name", "mean_lo", "mean_hi", "std_lo", "std_hi", "learned"}`` of the newest checkpoint;
    ``name`` is ``names[class]`` (:func:`intensity_class_names`) or empty."""
    checkpoint = load_checkpoint(resolve_checkpoint(run_folder))
    state = checkpoint["state"].get("augmenter") or {}
    gmm = checkpoint["config"]["synth"]["gmm"]
    values = {name: state.get(f"gmm__{name}") for name in ("mean", "std")}
    k = next((len(v) for v in values.values() if v is not None), len(gmm["mean"]) if _per_class(gmm) else 1)
    rows = []
    for c in range(k):
        row = {"class": c, "name": names[c] if names and c < len(names) else ""}
        for name in ("mean", "std"):
            v = values[name]
            lo, hi = (v[c].tolist() if v is not None else (gmm[name][c] if _per_class(gmm) else gmm[name]))
            row[f"{name}_lo"], row[f"{name}_hi"] = float(lo), float(hi)
        row["learned"] = ", ".join(n for n in ("mean", "std") if values[n] is not None) or "none"
        rows.append(row)
    return rows


def _per_class(gmm: dict) -> bool:
    return isinstance(gmm["mean"][0], list)


def intensity_class_names(synth, label_mapping: str | Path | None = None) -> list[str] | None:
    """A name per intensity class of a Synthesizer with label tables: the mapping's group name when the class is
    a group (``cortical_gm``), else its label values (``label 16``); None without label tables.

    Examples
    --------
    >>> from learn2synth.synth import Synthesizer, SynthConfig
    >>> config = SynthConfig()
    >>> config.labels.generation_labels, config.labels.generation_classes = [0, 2, 41, 16], [0, 1, 1, 2]
    >>> config.labels.segmentation_labels = [0, 1, 1, 2]
    >>> intensity_class_names(Synthesizer(config))
    ['label 0', 'labels 2, 41', 'label 16']
    """
    from .synth.pipeline import label_table

    table = label_table(synth.config.labels)
    if table is None:
        return None
    owner = {}
    if label_mapping:
        from .io import load_label_mapping

        owner = {v: name for name, vs in (load_label_mapping(label_mapping).groups or {}).items() for v in vs}
    names = []
    for k in range(max(c for _, c, _ in table) + 1):
        values = [v for v, c, _ in table if c == k]
        group = {owner.get(v) for v in values}
        if len(group) == 1 and None not in group:
            names.append(group.pop())
        else:
            names.append(("label " if len(values) == 1 else "labels ") + ", ".join(map(str, values)))
    return names


def format_table(rows: list[dict]) -> str:
    lines = ["| intensity class | mean range | std range | learned |", "|---|---|---|---|"]
    for r in rows:
        label = f"{r['class']} {r['name']}" if r.get("name") else str(r["class"])
        lines.append(f"| {label} | [{r['mean_lo']:.3f}, {r['mean_hi']:.3f}] | [{r['std_lo']:.3f}, {r['std_hi']:.3f}] "
                     f"| {r['learned']} |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def class_intensities(run, n_batches: int = 4) -> tuple[dict, dict]:
    """(real, synthetic): intensity samples per target class, of the real training pool and of images
    synthesized by the run's learned-priors augmenter."""
    real, synth = {}, {}
    for image, label in zip(run.real.images, run.real.labels, strict=True):
        _collect(real, image, label)
    generator = torch.Generator(device=run.device).manual_seed(0)
    for _ in range(n_batches):
        labels = run.labels.batch(run.config.batch_size, run.config.data.shape, generator).to(run.device)
        image, target = run.augmenter(labels, generator)
        _collect(synth, image, target)
    return ({c: torch.cat(v).cpu().numpy() for c, v in real.items()},
            {c: torch.cat(v).cpu().numpy() for c, v in synth.items()})


def _collect(out: dict, image: torch.Tensor, label: torch.Tensor) -> None:
    for c in label.unique().tolist():
        out.setdefault(int(c), []).append(image[label == c].flatten().float())


def plot_priors(run, path: str | Path) -> Path:
    """Per-class histograms, real beside synthesized with the learned priors, for a learn2synth method (its
    ``augmenter`` and data); written to ``path``."""
    from .report import _pyplot, _save

    real, synth = class_intensities(run)
    classes = sorted(set(real) | set(synth))
    plt = _pyplot()
    cols = min(len(classes), 4)
    rows = -(-len(classes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    names = run.config.data.class_names
    for ax, c in zip(axes.flat, classes, strict=False):
        for data, colour, name in ((real.get(c), "tab:blue", "real"), (synth.get(c), "tab:orange", "learned")):
            if data is not None and len(data):
                ax.hist(data, bins=50, density=True, alpha=0.55, color=colour, label=name)
        ax.set_title(names[c] if names and c < len(names) else f"class {c}", fontsize=9)
    for ax in axes.flat[len(classes):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("intensity per class: real training images vs synthesized with the learned priors", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def write_priors_report(run, out: str | Path) -> None:
    """``learned_priors.md`` (the table) and ``learned_priors.png`` (the figure) in the run folder ``out``."""
    out = Path(out)
    names = intensity_class_names(run.synth, run.config.data.label_mapping)
    text = "# Learned synthesis priors\n\n" + format_table(priors_table(out, names))
    with atomic_path(out / "learned_priors.md") as tmp:
        Path(tmp).write_text(text)
    if run.real is not None and len(run.real):
        plot_priors(run, out / "learned_priors.png")
