"""How well a model fits its own training distribution: Dice on the synthetic images it was trained on.

A model that scores low on real scans may be failing the domain gap or failing its own synthetic task; this tells
the two apart. For each ``--model`` (a training checkpoint, run folder or exported model), images are
synthesized from the label maps named in that model's own training config (every synthesis setting as trained,
``--set`` to change some), segmented whole, and scored pooled over all images: Dice per class, predicted /
true volume per class (1 = the right amount), and the **boundary spill** per class: of the background voxels
touching the class (face or diagonal neighbours), the fraction the model calls that class (0 = boundaries in
place; a thin structure drawn one voxel too thick scores near 1). Each model is run once as trained and once
with the resolution randomization off (sharp images). Writes ``benchmarks/results/synth_fit.md``.

    .venv/bin/python benchmarks/synth_fit.py [--model M ...] [--batches 40] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARP = "synth.resolution.enabled=false"


def tally(pred, target, n_classes: int):
    """Counts per class (tensor (5, n_classes): overlap, predicted, true, spilled, bordering voxels) of one batch of
    class maps ``(B, 1, *spatial)``; see the module docstring for spill."""
    import torch
    import torch.nn.functional as F

    pool = F.max_pool2d if pred.ndim == 4 else F.max_pool3d
    out = torch.zeros(5, n_classes, dtype=torch.float64)
    for c in range(1, n_classes):
        yc, pc = target == c, pred == c
        rim = (target == 0) & (pool(yc.float(), 3, 1, 1) > 0)
        out[:, c] = torch.stack([(yc & pc).sum(), pc.sum(), yc.sum(), (rim & pc).sum(), rim.sum()]).double()
    return out


def summarize(counts) -> dict:
    """Dice, volume ratio and spill per foreground class from summed :func:`tally` counts (nan where undefined)."""
    import torch

    inter, pred, true, spill, border = counts[:, 1:]
    ratio = lambda a, b: torch.where(b > 0, a / b.clamp_min(1), torch.nan)  # noqa: E731
    return {"dice": ratio(2 * inter, pred + true).tolist(), "volume": ratio(pred, true).tolist(),
            "spill": ratio(spill, border).tolist()}


def score(model, cfg, batches: int, batch_size: int) -> dict:
    """:func:`summarize` of ``model`` on ``batches`` synthetic batches of ``cfg``'s synthesis."""
    import torch

    from learn2synth.train import setup

    method, _ = setup(cfg, progress=False)
    counts = 0
    with torch.no_grad():
        for _ in range(batches):
            x, y = method.synth_batch(batch_size)
            p = model.net(x.to(model.device)).argmax(1, keepdim=True).cpu()
            counts = counts + tally(p, y, model.n_classes)
    return summarize(counts)


def run(args) -> list[tuple[str, str, dict, list[str]]]:
    import torch

    from learn2synth.checkpoint import load_checkpoint, resolve_checkpoint
    from learn2synth.inference import load_model
    from learn2synth.segment import shipped_model_path
    from learn2synth.train_config import load_train_config

    torch.set_num_threads(args.threads)
    rows = []
    for path in args.model or [shipped_model_path()]:
        model = load_model(path, "cpu")
        trained = load_checkpoint(resolve_checkpoint(path), map_location="cpu")["config"]
        for setting, extra in (("as trained" if not args.set else "as set", []), ("sharp", [SHARP])):
            sets = [f"seed={args.seed}", f"threads={args.threads}", *args.set, *extra]
            cfg = load_train_config(None, sets, base=trained)
            result = score(model, cfg, args.batches, args.batch_size)
            names = list(cfg.data.class_names or range(cfg.data.n_classes))[1:]
            rows.append((_shown(path), setting, result, [str(n) for n in names]))
            print(f"{rows[-1][0]} {setting}: Dice {[round(d, 3) for d in result['dice']]}", file=sys.stderr)
    return rows


def _shown(path) -> str:
    """A model's path as the table shows it: relative to the current folder when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def table(rows) -> str:
    names = rows[0][3]
    head = ["model", "synthesis", *[f"{n} Dice" for n in names], "mean Dice",
            *[f"{n} vol. ratio" for n in names], *[f"{n} spill" for n in names]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, setting, r, _ in rows:
        dice = r["dice"]
        cells = [name, setting, *[f"{d:.3f}" for d in dice], f"**{sum(dice) / len(dice):.3f}**",
                 *[f"{v:.2f}" for v in r["volume"]], *[f"{s:.2f}" for s in r["spill"]]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", help="checkpoints or run folders (default: the shipped coronal model)")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=321, help="synthesis seed (same images for every model)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a setting of the synthesis (as train --set)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "synth_fit.md")
    args = parser.parse_args(argv)
    rows = run(args)
    command = " ".join(["benchmarks/synth_fit.py", *(argv if argv is not None else sys.argv[1:])])
    text = (f"# Models on their own synthetic training images\n\nCommand (from the repository root):\n\n```\n"
            f".venv/bin/python {command}\n```\n\n{args.batches} batches of {args.batch_size} images per row, "
            f"synthesis seed {args.seed} (the same images for every model). Dice and volume ratio pooled over "
            "all images; spill: of the background voxels touching a class, the fraction called that class. "
            f"Synthesis as each model was trained{' but ' + ', '.join(args.set) if args.set else ''}; "
            f"sharp: also `{SHARP}`.\n\n"
            f"{table(rows)}\n")
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
