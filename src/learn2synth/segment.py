"""``learn2synth segment``: brain tissue segmentation of any 3D scan with the shipped model (or another).

Like FreeSurfer's ``mri_synthseg``: the input may be any NIfTI/MGZ scan, in any orientation, voxel size and
contrast; it is reoriented and resampled to the model's training space, segmented, the class probabilities are
refined by the scan's own intensities (:mod:`learn2synth.refine`; ``--no-refine`` skips it), and the label map
(and, with ``--posteriors``, the probabilities) is written in the input's own grid with its affine and header.
``--vol`` writes a CSV of the volume (mm^3) of every class in every scan (column ``scan``: the scan's path as
found from the input argument, unique even where file names repeat).

The shipped models (``learn2synth/models/brain_tissue*.pt``: one 2D model per view, coronal, axial and
sagittal, whose class probabilities are averaged) segment 4 tissue classes with the label values of OASIS
``seg4``: 0 background, 1 cortex, 2 subcortical grey matter (with cerebellar cortex), 3 white matter (with brain
stem and ventral DC), 4 CSF (ventricles, vessels, choroid plexus). They were trained by ``configs/
brain_synthseg.yaml`` on synthetic images only; see ``learn2synth/models/README.md``.
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, InputError

if TYPE_CHECKING:  # numpy is imported where it is used: the command line reads SHIPPED_VIEWS while it builds
    import numpy as np  # its parser, which must stay light (``learn2synth --help`` imports neither numpy nor torch)

#: The models ``segment`` averages when no ``--model`` is given, by view: one 2D model per view (coronal, axial,
#: sagittal slices of the same training space). The first (coronal) is the one model used where one is needed
#: (``adapt`` starts from it unless ``--view`` names another).
SHIPPED_VIEWS = {"coronal": "brain_tissue.pt", "axial": "brain_tissue_axial.pt",
                 "sagittal": "brain_tissue_sagittal.pt"}


def shipped_model_path(view: str = "coronal") -> Path:
    """Where the package keeps the shipped brain tissue model of one view."""
    path = Path(str(resources.files("learn2synth") / "models" / SHIPPED_VIEWS[view]))
    if not path.is_file():
        raise InputError(path, "the shipped brain model is missing from this installation; pass --model")
    return path


def shipped_model_paths() -> list[Path]:
    """The shipped models of every view, averaged by ``segment``."""
    return [shipped_model_path(view) for view in SHIPPED_VIEWS]


def plan_outputs(inputs: list[Path], out: Path, single_file: bool, posteriors: bool = False) -> list[Path]:
    """The label map written for each input: ``out`` itself for one input when ``single_file``, else the
    input's file name inside the folder ``out`` (or, when file names repeat, the input tree mirrored below
    ``out``: :func:`learn2synth.inference.output_names`). Collisions and existing files are refused before any
    work.

    Examples
    --------
    >>> [str(p) for p in plan_outputs([Path("a/x.nii.gz"), Path("b/y.mgz")], Path("seg"), False)]
    ['seg/x.nii.gz', 'seg/y.mgz']
    >>> [str(p) for p in plan_outputs([Path("a/s1/t1.mgz"), Path("a/s2/t1.mgz")], Path("seg"), False)]
    ['seg/s1/t1.mgz', 'seg/s2/t1.mgz']
    """
    from .inference import output_names, output_paths, refuse_existing

    def writes(target: Path) -> tuple[Path, ...]:  # the label map, and its posteriors (predict's naming)
        return output_paths(target, target.parent)[: 2 if posteriors else 1]

    if single_file:
        targets = [out]
    else:
        targets = [out / name for name in output_names(inputs, lambda path, name: writes(out / name))]
    refuse_existing([path for target in targets for path in writes(target)])
    return targets


def class_volumes(labels: np.ndarray, affine: np.ndarray, values) -> list[float]:
    """Volume in mm^3 of each label value in ``values``: voxel count times the voxel volume of ``affine``.

    Examples
    --------
    >>> import numpy as np
    >>> class_volumes(np.array([[[0, 1], [1, 2]]]), np.diag([2.0, 1.0, 0.5, 1.0]), [1, 2])
    [2.0, 1.0]
    """
    import numpy as np

    voxel = abs(float(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3])))
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=int(max(values)) + 1)
    return [float(counts[v]) * voxel for v in values]


def label_map_hint(array: np.ndarray, max_values: int = 64) -> str | None:
    """A warning when a scan looks like a label map (a swapped input gives plausible volumes otherwise): at most
    ``max_values`` distinct values, all integers. Scans stored as 8-bit integers have ~100-256.

    Examples
    --------
    >>> import numpy as np
    >>> label_map_hint(np.array([0, 2, 3, 41, 2]))
    'looks like a label map (4 distinct integer values), not an image'
    >>> label_map_hint(np.arange(200.0)) is None, label_map_hint(np.array([0.0, 0.5, 1.0])) is None
    (True, True)
    """
    import numpy as np

    flat = np.ravel(array)
    values = np.unique(flat[:: max(1, flat.size // 2_000_000)])  # a subsample: only the count matters
    if len(values) > max_values or not np.all(np.mod(values, 1) == 0):
        return None
    return f"looks like a label map ({len(values)} distinct integer values), not an image"


def run_segment(args) -> int:
    """The ``segment`` command; returns the exit code (2 if any scan failed, after doing the others)."""
    import sys

    from tqdm import tqdm

    from .inference import load_models, output_paths, predict_volume, set_threads
    from .io import list_files, read_image, supported_extension, write_image

    set_threads(args.threads)
    if args.batch_size < 1:
        raise ConfigError("--batch-size", f"must be at least 1, got {args.batch_size}")
    # the inputs and outputs are checked before the model loads (seconds, with torch's first use)
    inputs = list_files(args.input)
    out = Path(args.out)
    single = Path(args.input).is_file() and supported_extension(out) is not None
    if not single and out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    targets = plan_outputs(inputs, out, single, args.posteriors)
    vol_path = Path(args.vol) if args.vol else None
    if vol_path is not None and vol_path.exists():
        raise InputError(vol_path, "already exists; refusing to overwrite it")
    if len(inputs) == 1:
        _check_3d(inputs[0], _scan_shape(inputs[0]), args.model)
    model = load_models(args.model or shipped_model_paths(), args.device)
    if model.spatial_dims == 2 and model.orientation is None:
        print("learn2synth segment: warning: the model records no training orientation; scans are sliced as "
              "stored and not mirrored", file=sys.stderr)
    (out.parent if single else out).mkdir(parents=True, exist_ok=True)  # (mirrored sub-folders: at writing)
    values = list(range(model.n_classes)) if model.values is None else [int(v) for v in model.values]
    rows, failures = [], []
    bar = tqdm(list(zip(inputs, targets, strict=True)), desc="segment", unit="scan",
               disable=args.quiet or len(inputs) < 2)
    for source, target in bar:
        try:
            volume = read_image(source, colour=model.colour)
            _check_3d(source, volume.array.shape, args.model)
            hint = label_map_hint(volume.array)
            if hint:
                print(f"learn2synth segment: warning: {source}: {hint}; segmenting it anyway", file=sys.stderr)
            labels, probs = predict_volume(model, volume, args.batch_size, mirror=args.mirror,
                                           refine=args.refine)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_image(target, labels, like=volume)
            if args.posteriors:
                write_image(output_paths(target, target.parent)[1], probs, like=volume)
            rows.append([str(source), *class_volumes(labels, volume.affine, values[1:])])
        except InputError as e:
            failures.append(e if e.path is not None else InputError(source, e.problem))
    if vol_path is not None and rows:
        _write_volumes(vol_path, rows, model.class_names[1:] if model.class_names else values[1:])
    for error in failures:
        print(f"learn2synth segment: error: {error}", file=sys.stderr)
    if failures and len(inputs) == 1:  # the error line says it all
        return 2
    print(f"segment: {len(rows)} scan(s) into {out}" + (f", volumes in {vol_path}" if vol_path and rows else "")
          + (f"; {len(failures)} failed (listed above)" if failures else ""))
    return 2 if failures else 0


def _check_3d(path: Path, shape: tuple | None, models: list | None) -> None:
    """Refuse a 2D image (or a single slice) with the ``predict`` command that segments it."""
    if shape is None or (len(shape) >= 3 and min(shape[:3]) >= 2):
        return
    model_args = " ".join(f"--model {m}" for m in (models or [shipped_model_path()]))
    raise InputError(path, f"is not a 3D scan (shape {tuple(shape)}); segment takes 3D volumes. For 2D images "
                           f"or single slices: learn2synth predict {model_args} --in {path} --out DIR")


def _scan_shape(path: Path) -> tuple | None:
    """The shape in a NIfTI/MGZ header, without reading the voxels (None for other formats or unreadable
    headers: the full read reports those)."""
    try:
        import nibabel as nib

        return tuple(nib.load(str(path)).shape)
    except Exception:  # noqa: BLE001 - any unreadable header is reported by the full read later
        return None


def _write_volumes(path: Path, rows: list, names) -> None:
    from .io import atomic_path

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["scan", *[f"{n} (mm3)" for n in names]])
    writer.writerows([[r[0], *[f"{v:.1f}" for v in r[1:]]] for r in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text.getvalue())

