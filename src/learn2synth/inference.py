"""Segment images with a trained model: 2D slice by slice, 3D by sliding window, normalized as in training.

A model is a checkpoint written by training (:func:`learn2synth.train.save`); its config says how the network was built,
which normalization the training images had (``synth.normalize``, per example), the axis 2D models were trained
on (``data.slice_axis``), the 3D training patch size (``data.shape``) and the label mapping, if any.

- A **2D model** segments a 2D image (PNG, 2D TIFF, a NIfTI slice ``(X, Y, 1)``) directly, and a volume slice by
  slice along ``data.slice_axis`` (TIFF stacks along their first axis, the stack axis), in batches of slices,
  each slice normalized on its own as :mod:`learn2synth.data` does for training examples. Slices are padded with
  zeros (after normalization, as training crops are) to a multiple of the network's total stride.
- A **3D model** normalizes the whole volume, then runs MONAI's ``sliding_window_inference`` with windows of the
  training patch size, half-window overlap and Gaussian blending of the softmax probabilities.

Outputs keep the input's geometry: the label map is written into the output folder under the input's file name
and format (NIfTI/MGZ keep affine and header), with the class values of the training labels
(classes mapped back through ``LabelMapping.inverse()`` when training used a label mapping). Posteriors (float32,
one channel per class on a trailing axis) go to ``<name>_posteriors`` in the input's format when it can hold
them (NIfTI, MGZ, NPZ) and ``.nii.gz`` otherwise. Existing files are never overwritten and every write is
atomic.

Example (a 2-step model trained on phantoms; real models come from ``learn2synth train``)::

    model = load_model("runs/l2s/step_001000.pt")
    labels, posteriors = predict_volume(model, read_image("scan.nii.gz"))
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, InputError
from .io import LabelMapping, Volume, check_image, list_files, read_image, supported_extension, write_image

#: Formats whose files can hold a float posterior map with one channel per class.
_POSTERIOR_FORMATS = (".nii", ".nii.gz", ".mgz", ".mgh", ".npz")
POSTERIOR_SUFFIX = "_posteriors"


@dataclass
class Model:
    """A segmenter ready for inference, with what it needs from its training config."""

    net: torch.nn.Module
    path: Path
    spatial_dims: int
    n_classes: int
    slice_axis: int
    normalize: str
    patch_size: tuple[int, ...]
    stride: int  # total down-sampling factor: 2D inputs are padded to a multiple of it
    values: np.ndarray | None  # the label value written for each class (None: the class index itself)
    device: torch.device
    orientation: str | None = None  # training volumes' axis codes: scans are reoriented to it (None: as they are)
    voxel_size: float | None = None  # training voxel size (mm): scans are resampled to it (None: as they are)
    window: bool = False  # 2D: slide windows of patch_size (training used crops of larger examples), else whole
    class_names: list[str] | None = None
    colour: str = "refuse"  # how colour images become grey, as in training (data.colour)

    @property
    def left_right_axis(self) -> int | None:
        """Axis of the training orientation that runs left-right (None without a recorded orientation)."""
        if self.orientation is None:
            return None
        return next((i for i, code in enumerate(self.orientation.upper()) if code in "LR"), None)

    def class_values(self, classes: np.ndarray, indices: bool = False) -> np.ndarray:
        """Label values of predicted classes (the real labels' values the model was trained for), or the
        classes themselves when ``indices`` or when the model has no values."""
        if self.values is None or indices:
            return classes
        return self.values[classes]


@dataclass
class Ensemble:
    """Models whose class probabilities are averaged, e.g. one 2D model per slice axis (coronal, axial and
    sagittal views of the same brain, aggregated as FastSurfer does) or several checkpoints of one run.

    The members must segment the same classes into the same label values, in the same training space
    (orientation, voxel size) and the same dimensionality; those shared attributes (``SHARED``) are read from
    the first. What differs per member (network, slice axis, normalization, window) has no ensemble-wide value:
    asking the ensemble for it is an AttributeError. Each 2D member slices along its own axis.
    """

    members: list[Model]
    MATCHED = ("n_classes", "spatial_dims", "orientation", "voxel_size", "colour", "class_names")  # checked equal
    SHARED = (*MATCHED, "values", "path", "device", "left_right_axis", "class_values")  # read from the first

    def __post_init__(self):
        if not self.members:
            raise InputError(None, "an ensemble needs at least one model")
        first = self.members[0]
        for other in self.members[1:]:
            for name in Ensemble.MATCHED:
                if getattr(other, name) != getattr(first, name):
                    raise InputError(other.path, f"cannot be averaged with {first.path}: {name} "
                                                 f"{getattr(other, name)!r} against {getattr(first, name)!r}")
            classes = np.arange(first.n_classes)
            if not np.array_equal(first.class_values(classes), other.class_values(classes)):
                raise InputError(other.path, f"writes other label values than {first.path}; cannot average them")

    def __getattr__(self, name):  # only the shared description; per-member settings have no single value
        if name not in Ensemble.SHARED:
            raise AttributeError(f"{name!r}: not shared by the members of an Ensemble (ask each of .members)")
        return getattr(self.members[0], name)


def load_models(paths, device: str | torch.device = "auto",
                label_mapping: str | os.PathLike | None = None) -> Model | Ensemble:
    """:func:`load_model` for one path; an :class:`Ensemble` of every path's model for several. A checkpoint given
    twice (directly or as its run folder) is refused: it would silently weigh one model double."""
    from .checkpoint import resolve_checkpoint

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    given = {}  # each checkpoint file (a run folder's newest, found once) by its absolute path -> as given
    for path in paths:
        checkpoint = resolve_checkpoint(path)
        key = checkpoint.resolve()
        if key in given:
            raise InputError(path, f"the same checkpoint as --model {given[key][0]} ({checkpoint.name}); give each "
                                   "model once")
        given[key] = (path, checkpoint)
    models = [load_model(checkpoint, device, label_mapping) for _, checkpoint in given.values()]
    return models[0] if len(models) == 1 else Ensemble(models)


def load_model(path: str | os.PathLike, device: str | torch.device = "auto",
               label_mapping: str | os.PathLike | None = None) -> Model:
    """Load a checkpoint (a ``step_*.pt`` file, or a run folder: its newest checkpoint) for inference.

    Parameters
    ----------
    path : str or PathLike
        Checkpoint file or run folder.
    device : str or torch.device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
    label_mapping : str or PathLike, optional
        The label mapping YAML to use instead of the file named in the training config (which is read
        relative to the current folder, as in training).

    Raises
    ------
    InputError
        Not a learn2synth checkpoint, a newer format, a config this version cannot read, weights that do not
        fit the network the config describes, or a label mapping that is missing or does not cover every class.
    """
    from .checkpoint import load_checkpoint, resolve_checkpoint
    from .config import from_dict
    from .nets import build_net
    from .train_config import TrainConfig

    path = resolve_checkpoint(path)
    checkpoint = load_checkpoint(path, map_location="cpu")
    made_with = checkpoint.get("learn2synth_version", "an unknown version")
    try:
        config = from_dict(TrainConfig, checkpoint["config"])
    except (ConfigError, TypeError) as e:
        raise InputError(path, f"its config does not fit this learn2synth (made with {made_with}): {e}") from e
    params = checkpoint["state"].get("params") if isinstance(checkpoint["state"], dict) else None
    if not isinstance(params, dict):
        raise InputError(path, "checkpoint holds no segmenter parameters (state['params'])")
    d, n = config.data, config.net
    net = build_net(config)
    try:
        net.load_state_dict(params)
    except RuntimeError as e:
        raise InputError(path, f"weights do not fit the network its config describes (made with {made_with}): "
                               f"{str(e).splitlines()[0]}") from e
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    net.to(device).eval()
    strides = n.strides if n.strides is not None else [2] * (len(n.channels) - 1)
    return Model(net, path, d.spatial_dims, d.n_classes, d.slice_axis, config.synth.normalize, tuple(d.shape),
                 math.prod(strides), _label_values(path, checkpoint, label_mapping, d.n_classes), device,
                 d.orientation, d.voxel_size, bool((checkpoint.get("extra") or {}).get("sliding_window", False)),
                 d.class_names, d.colour)


def _label_values(path: Path, checkpoint: dict, override, n_classes: int) -> np.ndarray | None:
    """Label value per class: from ``override`` (a mapping YAML of the real labels), else what the checkpoint
    records (``label_values``; older checkpoints: their label mapping, stored or named in the config)."""
    extra = checkpoint.get("extra") or {}
    if override:
        mapping = _mapping(path, override, n_classes)
    elif "label_values" in extra:
        values = np.asarray(extra["label_values"], dtype=np.int64)
        if len(values) != n_classes:
            raise InputError(path, f"records {len(values)} label values for {n_classes} classes")
        return values
    elif extra.get("label_mapping") is not None:
        mapping = LabelMapping(extra["label_mapping"]["mapping"], extra["label_mapping"]["default"])
    else:
        mapping = _mapping(path, checkpoint["config"].get("data", {}).get("label_mapping"), n_classes)
    return None if mapping is None else mapping.inverse()(np.arange(n_classes))


def _mapping(checkpoint: Path, source, n_classes: int) -> LabelMapping | None:
    if not source:
        return None
    from .io import load_label_mapping

    if not Path(source).is_file():
        raise InputError(source, f"label mapping of the model {checkpoint} not found (paths in a config are "
                                 "relative to the folder training ran in); pass --label-mapping, or "
                                 "--class-indices to write class indices")
    mapping = load_label_mapping(source)
    back = mapping.inverse().mapping
    missing = [c for c in range(n_classes) if c not in back]
    if missing:
        raise InputError(source, f"label mapping gives no label value for classes {missing} of the model "
                                 f"{checkpoint}; use --class-indices to write class indices")
    return mapping


@torch.inference_mode()
def predict_array(model: Model | Ensemble, image: np.ndarray, batch_size: int = 8,
                  slice_axis: int | None = None) -> np.ndarray:
    """Class probabilities ``(n_classes, *image.shape)`` (float32) of a checked 2D or 3D image.

    Parameters
    ----------
    model : Model or Ensemble
        An ensemble averages its members' probabilities.
    image : np.ndarray
        2D image, or 3D volume (a 2D model segments it slice by slice along ``slice_axis``).
    batch_size : int
        Slices per forward pass (2D model) or windows per forward pass (3D model).
    slice_axis : int, optional
        Axis of the slices for a 2D model on a volume; the training ``data.slice_axis`` by default.
    """
    from .synth.normalize import normalize

    if isinstance(model, Ensemble):
        return _mean(predict_array(m, image, batch_size, slice_axis) for m in model.members)
    image = np.asarray(image, dtype=np.float32)
    if model.spatial_dims == 3:
        from monai.inferers import sliding_window_inference

        x = normalize(torch.from_numpy(image)[None, None].to(model.device), model.normalize)
        probs = sliding_window_inference(x, model.patch_size, batch_size, _softmax(model.net), overlap=0.5,
                                         mode="gaussian", padding_mode="constant", cval=0.0)
        return probs[0].float().cpu().numpy()
    if image.ndim == 2:
        return predict_array(model, image[None], batch_size, slice_axis=0)[:, 0]
    axis = model.slice_axis if slice_axis is None else slice_axis
    slices = np.moveaxis(image, axis, 0)
    out = np.zeros((model.n_classes, *slices.shape), dtype=np.float32)
    flat = slices.reshape(len(slices), -1)
    empty = flat.min(1) == flat.max(1) if flat.size else np.ones(len(slices), bool)
    out[0, empty] = 1.0  # an empty or constant slice is background: there is nothing in it to segment
    todo = np.flatnonzero(~empty)
    for start in range(0, len(todo), batch_size):
        index = todo[start:start + batch_size]
        x = torch.from_numpy(np.ascontiguousarray(slices[index]))[:, None].to(model.device)
        x = normalize(x, model.normalize)  # per slice, as each 2D training example is normalized on its own
        out[:, index] = _forward_2d(model, x, batch_size).cpu().numpy().swapaxes(0, 1)
    return np.moveaxis(out, 1, axis + 1)


def _forward_2d(model: Model, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax of a 2D model on slices ``x`` (B, 1, H, W): whole slices padded to the stride, or, when training
    used crops of larger examples, sliding windows of the training shape (half overlap, Gaussian blending)."""
    if not model.window:
        return _forward_padded(model, x)
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(x, model.patch_size, batch_size, _softmax(model.net), overlap=0.5,
                                    mode="gaussian", padding_mode="constant", cval=0.0)


def _softmax(net):
    return lambda x: torch.softmax(net(x), dim=1)


def _forward_padded(model: Model, x: torch.Tensor) -> torch.Tensor:
    """Softmax of the network on ``x`` (B, 1, H, W), padded to a multiple of the total stride and cropped back."""
    from .nets import padded_forward

    return padded_forward(_softmax(model.net), x, model.stride)


def predict_volume(model: Model | Ensemble, volume: Volume, batch_size: int = 8, class_indices: bool = False,
                   mirror: bool = False, refine: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Segment a volume read by :func:`learn2synth.io.read_image`.

    With ``mirror``, a scan (NIfTI/MGZ) is also segmented mirrored left-right in the model's space and the two
    probability maps are averaged (test-time augmentation: twice the passes, except for models slicing
    along the left-right axis; +0.015 mean volume Dice for the coronal brain model alone on OASIS 0001 T1,
    +0.004 for the three views averaged, ``benchmarks/results/segment.md``). Needs a model that records its
    training orientation; other inputs are segmented once. ``model`` may be an :class:`Ensemble`.

    With ``refine``, the probabilities of a scan (NIfTI/MGZ, one channel) are refined by the scan's own tissue
    intensities (:func:`learn2synth.refine.refine`, in the scan's grid; about 2 s for a 160x192x224 volume).

    Returns
    -------
    labels : np.ndarray
        Integer label map (uint8, uint16 or int32: the smallest that holds the values) of the volume's array
        shape, in the training label values.
    posteriors : np.ndarray
        float32 probabilities, the volume's spatial shape padded to three axes, then one channel per class.

    Raises
    ------
    InputError
        NaN/inf or non-numeric values, or a dimensionality the model cannot segment.
    """
    from .io import squeeze_2d

    path = volume.path
    array = check_image(volume.array, path)
    original = array.shape
    while array.ndim > 3 and array.shape[-1] == 1:  # (X, Y, Z, 1) as some tools write volumes
        array = array[..., 0]
    if array.ndim == 3 and 1 in array.shape:
        array = squeeze_2d(array)
    if array.ndim not in (2, 3):
        raise InputError(path, f"expected a 2D image or a 3D volume, got shape {original}")
    if model.spatial_dims == 3 and array.ndim == 2:
        raise InputError(path, f"is a 2D image (shape {original}) but the model {model.path.name} is 3D")
    if array.ndim == 3 and volume.format in ("nifti", "mgh"):  # a scan: its own space, and its support
        probs = _predict_in_model_space(model, array, volume.affine, batch_size, mirror)
        _background_outside_support(probs, array)
        if refine:
            from .refine import refine as refine_probs

            probs = refine_probs(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)),
                                 torch.from_numpy(probs)).numpy()
    else:  # 2D images and TIFF stacks (microscopy: dark pixels at the border may well be structure)
        slice_axis = 0 if volume.format == "tiff" else None  # TIFF stacks are stacks of 2D slices
        probs = predict_array(model, array, batch_size, slice_axis)
    labels = _smallest_uint(model.class_values(probs.argmax(0), indices=class_indices).reshape(original))
    spatial = original[:3] + (1,) * (3 - len(original[:3]))
    posteriors = np.moveaxis(probs, 0, -1).reshape(*spatial, model.n_classes)
    return labels, posteriors


def _predict_in_model_space(model: Model, array: np.ndarray, affine: np.ndarray, batch_size: int,
                            mirror: bool = False) -> np.ndarray:
    """Probabilities of a scan segmented in the model's training space (orientation, voxel size), brought back
    to the scan's grid; without a recorded space, the scan is segmented as it is. ``mirror``: see
    :func:`predict_volume`."""
    if model.orientation is None and model.voxel_size is None:
        return predict_array(model, array, batch_size)
    from .geometry import from_model_space, to_model_space

    moved, placement = to_model_space(array, affine, model.orientation, model.voxel_size)
    return from_model_space(mirror_average(model, moved, batch_size, mirror), placement)


def _mean(arrays) -> np.ndarray:
    """Mean of probability maps, accumulated in place (each map of a brain volume is some 140 MB): the first
    array is overwritten, so pass only arrays nothing else holds (fresh :func:`predict_array` results)."""
    total, count = None, 0
    for array in arrays:
        total = array if total is None else np.add(total, array, out=total)
        count += 1
    total *= 1 / count
    return total


def mirror_average(model: Model | Ensemble, array: np.ndarray, batch_size: int, mirror: bool = True) -> np.ndarray:
    """Probabilities of ``model`` on ``array`` (in its training space); with ``mirror``, averaged with those of
    the array mirrored left-right. A 2D model that slices along the left-right axis (a sagittal model) is run
    once: mirroring only reorders its slices, so the average would equal the single pass. An ensemble averages
    this over its members."""
    if isinstance(model, Ensemble):
        return _mean(mirror_average(m, array, batch_size, mirror) for m in model.members)
    probs = predict_array(model, array, batch_size)
    axis = model.left_right_axis if mirror else None
    if axis is None or (model.spatial_dims == 2 and model.slice_axis == axis):
        return probs
    mirrored = predict_array(model, np.flip(array, axis).copy(), batch_size)
    return _mean([probs, np.flip(mirrored, axis + 1)])


def _background_outside_support(probs: np.ndarray, array: np.ndarray) -> None:
    """Make background certain, in place, where the image has no support: voxels at the image's minimum value
    connected to its border (the zeros around a skull-stripped brain, the padding of a resampled scan)."""
    from scipy import ndimage

    low = array <= array.min()
    if not low.any():
        return
    components, _ = ndimage.label(low)
    border = np.zeros_like(low)
    for axis in range(low.ndim):
        index = [slice(None)] * low.ndim
        for end in (0, -1):
            index[axis] = end
            border[tuple(index)] = True
    outside = np.isin(components, np.unique(components[border & low]))
    probs[:, outside] = 0.0
    probs[0, outside] = 1.0


def _smallest_uint(labels: np.ndarray) -> np.ndarray:
    """uint8 or uint16 when the values fit (what TIFF/PNG viewers read best), else int32."""
    top = int(labels.max()) if labels.size else 0
    return labels.astype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.int32)


def output_paths(source: str | os.PathLike, out: str | os.PathLike,
                 name: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(label map, posteriors) files for an input: the input's name in ``out``, and ``<stem>_posteriors``.

    ``name`` replaces the input's file name by a path relative to ``out`` (what :func:`predict_files` uses to
    mirror input folders). A GIF input's label map is written as PNG (GIF is read only).

    Examples
    --------
    >>> [p.name for p in output_paths("scans/a.nii.gz", "seg")]
    ['a.nii.gz', 'a_posteriors.nii.gz']
    >>> [p.name for p in output_paths("em/slice.png", "seg")]
    ['slice.png', 'slice_posteriors.nii.gz']
    >>> [str(p) for p in output_paths("OASIS/OAS1_0001/image.nii.gz", "seg", name="OAS1_0001/image.nii.gz")]
    ['seg/OAS1_0001/image.nii.gz', 'seg/OAS1_0001/image_posteriors.nii.gz']
    >>> output_paths("DRIVE/21_manual1.gif", "seg")[0].name
    '21_manual1.png'
    """
    source, out = Path(source), Path(out)
    relative = Path(source.name if name is None else name)
    extension = supported_extension(relative) or ""
    stem = relative.name[: len(relative.name) - len(extension)]
    label_ext = ".png" if extension.lower() == ".gif" else relative.name[len(stem):]
    posterior_ext = next((e for e in _POSTERIOR_FORMATS if e == extension.lower()), ".nii.gz")
    folder = out / relative.parent
    return folder / f"{stem}{label_ext}", folder / f"{stem}{POSTERIOR_SUFFIX}{posterior_ext}"


def predict_file(model: Model, source: str | os.PathLike, out: str | os.PathLike, posteriors: bool = False,
                 batch_size: int = 8, class_indices: bool = False,
                 name: str | os.PathLike | None = None, mirror: bool = False) -> list[Path]:
    """Segment one file into the folder ``out`` (under ``name`` if given, see :func:`output_paths`); returns
    the files written. Sub-folders of ``out`` that ``name`` asks for are created.

    Raises
    ------
    InputError
        Unreadable or unusable input, or an output file that already exists (nothing is then written).
    """
    label_path, posterior_path = output_paths(source, out, name)
    targets = [label_path, posterior_path] if posteriors else [label_path]
    refuse_existing(targets)
    volume = read_image(source, colour=model.colour)
    labels, probs = predict_volume(model, volume, batch_size, class_indices, mirror)
    refuse_existing(targets)  # again: the folder may have changed while the model ran
    label_path.parent.mkdir(parents=True, exist_ok=True)
    written = [write_image(label_path, labels, like=volume)]
    if posteriors:
        like = volume if volume.format in ("nifti", "mgh", "npz") else Volume(probs[..., 0], path=volume.path)
        written.append(write_image(posterior_path, probs, like=like))
    return written


def refuse_existing(paths) -> None:
    """One error naming the first of ``paths`` that exists (and how many more do), before any work."""
    existing = [path for path in paths if Path(path).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more of the outputs)" if len(existing) > 1 else ""
        raise InputError(existing[0], f"already exists{more}; refusing to overwrite it (choose another --out)")


def predict_files(model: Model, source: str | os.PathLike, out: str | os.PathLike, posteriors: bool = False,
                  batch_size: int = 8, class_indices: bool = False,
                  progress: bool = True, mirror: bool = False) -> tuple[list[Path], list[InputError]]:
    """Segment a file, a folder or a glob into ``out`` (created if needed), going on past bad files.

    Outputs take the inputs' file names (:func:`output_paths`). When two inputs would give the same output
    name (``--in 'OASIS/*/image.nii.gz'``: one folder per subject, same file names), the outputs mirror the
    input folders below the deepest folder holding every input instead (``out/OAS1_0001/image.nii.gz``, ...).
    Output names that still collide (``a.png`` and ``a.gif`` both give ``a.png``) are refused before any
    prediction, so nothing is computed for an output that could not be written.

    Returns
    -------
    segmented : list of Path
        Inputs segmented.
    failures : list of InputError
        One per input that could not be segmented, each naming the file and the problem.

    Raises
    ------
    InputError
        Unusable ``source`` or ``out``, two inputs whose outputs would have the same name, or outputs that
        already exist (nothing is then computed).
    """
    from tqdm import tqdm

    files = list_files(source)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    def writes(path, name):  # the label map (and posteriors) an input writes under a name
        return output_paths(path, out, name)[: 2 if posteriors else 1]

    names = output_names(files, writes)
    # one line before any work, not one per file after it
    refuse_existing([t for path, name in zip(files, names, strict=True) for t in writes(path, name)])
    out.mkdir(parents=True, exist_ok=True)
    segmented, failures = [], []
    for path, name in tqdm(list(zip(files, names, strict=True)), desc="predict", unit="file",
                           disable=not progress or len(files) < 2):
        try:
            predict_file(model, path, out, posteriors, batch_size, class_indices, name=name, mirror=mirror)
            segmented.append(path)
        except InputError as e:
            failures.append(e if e.path is not None else InputError(path, e.problem))
    return segmented, failures


def output_names(files: list[Path], writes) -> list[Path]:
    """Output name (relative to the output folder) of each input: its file name, or when two inputs would write
    the same file (one folder per subject with the same file names), its path below the deepest folder holding
    every input, so that the outputs mirror the input tree. ``writes(path, name)`` lists the files an input
    writes under a name. Outputs that still collide (``a.png`` and ``a.gif`` both give ``a.png``) are refused
    before any work; case is ignored, as macOS does.

    Examples
    --------
    >>> names = output_names([Path("A/s1/t1.nii.gz"), Path("A/s2/t1.nii.gz")], lambda path, name: [name])
    >>> [str(n) for n in names]
    ['s1/t1.nii.gz', 's2/t1.nii.gz']
    """
    from .io import mirrored_names

    def colliding(names) -> list[tuple[Path, list[Path]]]:
        writers: dict[str, tuple[Path, list[Path]]] = {}
        for path, name in zip(files, names, strict=True):
            for target in writes(path, name):
                writers.setdefault(str(target).casefold(), (Path(target), []))[1].append(path)
        return [(target, inputs) for target, inputs in writers.values() if len(inputs) > 1]

    names = [Path(path.name) for path in files]
    if colliding(names):
        names = mirrored_names(files)
        collisions = colliding(names)
        if collisions:
            target, inputs = collisions[0]
            raise InputError(target, f"inputs {inputs[0]} and {inputs[1]} would both be written here; rename one "
                                     "or segment them into separate --out folders")
    return names


def idle_threads(cores: int | None = None, load: float | None = None) -> int:
    """How many threads inference uses when ``--threads`` is not given: the cores not already busy, i.e. torch's
    thread count less the 1-minute load average (rounded), at least 1.

    Measured in a new-user trial on 2 cores with two training jobs running (load 3-4): ``segment`` on one brain
    took 135 s with torch's default of 2 threads and 26 s with 1, same output. Threads that wait for a busy
    core stall the others at every parallel region.

    >>> idle_threads(cores=2, load=0.4), idle_threads(cores=2, load=1.2), idle_threads(cores=8, load=3.6)
    (2, 1, 4)
    """
    cores = torch.get_num_threads() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on every platform
            return cores
    return max(1, cores - round(load))


def set_threads(threads: int | None) -> None:
    """Apply a ``--threads`` option. None: :func:`idle_threads`, unless ``OMP_NUM_THREADS`` chose already."""
    if threads is None:
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(idle_threads())
        return
    if threads < 1:
        raise ConfigError("--threads", f"must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def run_predict(args) -> int:
    """``learn2synth predict``: one line per bad file on stderr, exit code 2 if any file failed."""
    import sys

    if args.batch_size < 1:
        raise ConfigError("--batch-size", f"must be at least 1, got {args.batch_size}")
    set_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda was asked for but no CUDA device is available")
    model = load_models(args.model, args.device, args.label_mapping)
    if args.mirror and model.left_right_axis is None:
        raise ConfigError("--mirror", f"the model {model.path.name} records no training orientation, so its "
                                      "left-right axis is unknown")
    segmented, failures = predict_files(model, args.input, args.out, args.posteriors, args.batch_size,
                                        args.class_indices, progress=not args.quiet, mirror=args.mirror)
    for error in failures:
        print(f"learn2synth predict: error: {error}", file=sys.stderr)
    print(f"predict: segmented {len(segmented)} file(s) into {args.out}"
          + (f"; {len(failures)} failed (listed above)" if failures else ""))
    return 2 if failures else 0
