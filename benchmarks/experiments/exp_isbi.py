"""ISBI 2012 experiment: every training method on the ISBI 2012 EM membrane training set, membrane vs interior.

- Real training data: ``--train`` slices (default 3: 0, 1, 2) of the 30 (image/N.png, label/N.png).
- Synthesis: from the label maps of those training slices only (2 labels: membrane, cell interior), through
  ``configs/experiments/isbi_membranes.yaml``; random crops of ``data.shape``.
- Test: the other 27 slices, segmented whole (512 x 512).

    python benchmarks/experiments/exp_isbi.py --data ../shared/data            # full
    python benchmarks/experiments/exp_isbi.py --data ../shared/data --quick    # smoke run (< 5 min)

Writes ``benchmarks/results/exp_isbi.md`` and ``exp_isbi.png``. Same protocol and code as ``exp_em.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from exp_em import Experiment, parse, run_2d  # noqa: E402


def isbi_pairs(data: Path) -> list[tuple[Path, Path]]:
    folder = data / "em" / "isbi2012"
    ids = sorted(int(p.stem) for p in (folder / "image").glob("*.png"))
    pairs = [(folder / "image" / f"{i}.png", folder / "label" / f"{i}.png") for i in ids]
    missing = [str(lab) for _, lab in pairs if not lab.exists()]
    if not pairs or missing:
        raise SystemExit(f"{folder}: no images, or labels missing: {missing[:3]}")
    return pairs


def main(argv=None) -> int:
    args, data = parse("isbi", __file__, argv)
    exp = Experiment(
        "isbi", "ISBI 2012 EM (membranes)", common.REPO / "configs" / "experiments" / "isbi.yaml",
        common.REPO / "configs" / "experiments" / "isbi_membranes.yaml", isbi_pairs(data), ["membrane"],
        ["- Data: `em/isbi2012` (30 slices, 512 x 512): image/N.png, label/N.png (0 membrane, 255 interior; "
         "`configs/experiments/isbi_membranes.yaml` makes membrane class 1). Same ssTEM source as the VNC stack.",
         "- Synthesis from the binary label maps of the training slices only (two intensity classes), random "
         "crops."])
    return run_2d(exp, args)


if __name__ == "__main__":
    raise SystemExit(main())
