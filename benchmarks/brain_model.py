"""Build the shipped brain tissue model from a training run of ``configs/brain_synthseg.yaml``.

Training (the long part; resumable, run it in the background and again after any interruption)::

    .venv/bin/learn2synth train --config configs/brain_synthseg.yaml --out runs/brain_synthseg --resume

Export (a weights-only checkpoint inside the package, the training curve and the provenance file)::

    .venv/bin/python benchmarks/brain_model.py export runs/brain_synthseg [--hours 2.1]

``segment`` averages three such models, one per view (coronal, axial, sagittal slices of the label maps'
LIA space). The axial and sagittal ones start from the coronal model's weights and train on their own slices
(``VIEWS`` holds the settings that differ; ``--view`` picks them)::

    V=(--set data.slice_axis=1 --set "data.shape=[160,224]" --set init_from=src/learn2synth/models/brain_tissue.pt)
    .venv/bin/learn2synth train --config configs/brain_synthseg.yaml --out runs/brain_axial --resume "${V[@]}" \
        --set optim.lr=3e-4 --set "optim.milestones=[10000,16000]" --set steps=20000
    .venv/bin/learn2synth train --config configs/brain_synthseg.yaml --out runs/brain_axial --resume "${V[@]}" \
        --set optim.lr=1e-4 --set "optim.milestones=[32000]" --set steps=40000   # a warm restart
    .venv/bin/python benchmarks/brain_model.py export runs/brain_axial --view axial --hours 1.8

The exported file holds the config, the step count, the segmenter's weights and the label values per class, but
no optimizer or RNG state (those live in the run folder, which training resumes from); ``segment`` and
``predict`` load it like any checkpoint. ``--hours`` records the wall time the training took (summed over its
sittings; the run folder does not know it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "src" / "learn2synth" / "models"
#: per view: the slice axis of the LIA label maps and the training shape (a whole OASIS slice); the file written
#: is the package's own name for that view (``learn2synth.segment.SHIPPED_VIEWS``)
VIEWS = {"coronal": (2, [160, 192]), "axial": (1, [160, 224]), "sagittal": (0, [192, 224])}


def export(run: Path, hours: float | None, config_yaml: Path, view: str = "coronal") -> Path:
    import torch

    from learn2synth.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from learn2synth.config import to_dict
    from learn2synth.segment import SHIPPED_VIEWS
    from learn2synth.train_config import load_train_config

    path = latest_checkpoint(run)
    if path is None:
        raise SystemExit(f"{run}: no checkpoint")
    ckpt = load_checkpoint(path)
    axis, shape = VIEWS[view]
    name = Path(SHIPPED_VIEWS[view]).stem
    # the shipped config (inference settings as they are now) on the view's slices
    config = to_dict(load_train_config(config_yaml, [f"data.slice_axis={axis}", f"data.shape={shape}"]))
    for key in ("optim", "steps", "init_from"):  # how this model was trained (the views' differ from the YAML)
        config[key] = ckpt["config"][key]
    if ckpt["config"]["data"]["slice_axis"] != axis:
        raise SystemExit(f"{path} was trained on slices along axis {ckpt['config']['data']['slice_axis']}, "
                         f"not the {view} view's axis {axis}")
    if config["net"] != ckpt["config"]["net"] or config["data"]["n_classes"] != ckpt["config"]["data"]["n_classes"]:
        raise SystemExit(f"{config_yaml} describes another network than {path}")
    # float16 on disk (half the size, so that three views fit the package's 10 MB); loading casts back
    params = {k: v.to(torch.float16).contiguous() for k, v in ckpt["state"]["params"].items()}
    extra = {"label_values": list(range(config["data"]["n_classes"])), "sliding_window": True,
             "trained_steps": int(ckpt["step"]), "training_hours": hours, "source": path.name}
    out = save_checkpoint(MODELS / f"{name}.pt", config=config, step=ckpt["step"], state={"params": params},
                          rng={}, extra=extra)
    curve(run / "metrics.csv", MODELS / f"{name}_curve.png")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, step {ckpt['step']}) and the training curve")
    return out


def curve(metrics_csv: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from learn2synth.runlog import series

    steps, loss = map(np.array, zip(*series(metrics_csv, ["loss_synth"])["loss_synth"], strict=True))
    window = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(steps, loss, lw=0.5, alpha=0.4, label="loss (Dice + CE) on synthetic batches")
    ax.plot(steps[window - 1:], smooth, lw=1.5, label=f"moving average ({window} logs)")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="write the shipped weights-only checkpoint and the curve from a run folder")
    p.add_argument("run", type=Path)
    p.add_argument("--hours", type=float, help="training wall time, summed over sittings")
    p.add_argument("--config", type=Path, default=REPO / "configs" / "brain_synthseg.yaml")
    p.add_argument("--view", choices=list(VIEWS), default="coronal", help="which view the run trained")
    args = parser.parse_args(argv)
    export(args.run, args.hours, args.config, args.view)
    return 0


if __name__ == "__main__":
    sys.exit(main())
