"""Loading label maps for 2D training: time, pool memory and peak RSS (the 20 SynthSeg 256^3 maps by default).

A 2D run keeps every label-bearing slice; the pool stores each slice cropped to its non-zero bounding box in the
smallest integer type (int16 here), so it holds a fraction of what the same slices take as uncropped int64
(computed, not loaded, for comparison). Writes ``benchmarks/results/label_pool.md``.

    .venv/bin/python benchmarks/label_pool.py [--labels DIR] [--axis 2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "experiments"))
import common  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="../shared/data/brain/synthseg_label_maps")
    parser.add_argument("--axis", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "label_pool.md"))
    args = parser.parse_args(argv)
    from learn2synth.data import load_label_pool

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    pool = load_label_pool(args.labels, 2, args.axis, progress=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stored = sum(m.numel() * m.element_size() for m in pool.maps) / 2**20
    import nibabel as nib

    from learn2synth.io import list_files

    files = list_files(args.labels)
    side = nib.load(files[0]).shape
    full = len(pool.maps) * side[0] * side[1] * 8 / 2**20  # the same slices uncropped as int64
    lines = common.report_head("Label pool for 2D training: time and memory", False,
                               common.command_line(__file__, argv))
    lines += [f"{len(files)} label maps of {side} -> {len(pool.maps)} label-bearing slices along axis {args.axis}.", "",
              "| quantity | value |", "|---|---|",
              f"| load time (read, check, slice, crop) | {seconds:.1f} s |",
              f"| pool size (cropped, {pool.maps[0].dtype}) | {stored:.0f} MiB |",
              f"| the same slices uncropped as int64 | {full:.0f} MiB |",
              f"| peak RSS of the process (before loading: {rss0:.0f} MiB) | {peak:.0f} MiB |", ""]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
