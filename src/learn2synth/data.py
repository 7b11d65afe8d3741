"""Training data: a pool of label maps for synthesis, and real labeled examples split by subject.

Both pools live in memory as lists of tensors and hand out batches of random crops (padded with zeros when
an example is smaller than the crop) drawn with the run's explicit generator, so a resumed run draws the
same batches. 3D volumes are cut into 2D slices (along ``data.slice_axis``, label-bearing slices only) when
the network is 2D. Real images are normalized per example exactly like the synthetic ones
(``synth.normalize``), and :mod:`learn2synth.inference` applies the same normalization.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import InputError


def random_crop_params(shape: Sequence[int], size: Sequence[int], generator: torch.Generator) -> list[int]:
    """Top-left corner of a random crop of ``size`` in ``shape`` (0 where the example is smaller)."""
    pairs = zip(shape, size, strict=True)
    return [int(torch.randint(max(s - c, 0) + 1, (1,), generator=generator)) for s, c in pairs]


def crop_or_pad(x: torch.Tensor, corner: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Crop ``x`` (C, *spatial) at ``corner`` to ``size``, padding with zeros (centred) where it is smaller."""
    index = tuple(slice(c, c + s) for c, s in zip(corner, size, strict=True))
    x = x[(slice(None), *index)]
    pad = []
    for have, want in zip(reversed(x.shape[1:]), reversed(list(size)), strict=True):
        missing = want - have
        pad += [missing // 2, missing - missing // 2]
    return torch.nn.functional.pad(x, pad) if any(pad) else x


def random_crops(n: int, size: Sequence[int], generator: torch.Generator, *examples: list[torch.Tensor]):
    """``n`` random picks of the examples, each cropped (or padded) at one random corner in every list of
    ``examples`` (images and labels of one example stay aligned); one stacked batch per list."""
    picks = torch.randint(len(examples[0]), (n,), generator=generator).tolist()
    crops = [[] for _ in examples]
    for i in picks:
        corner = random_crop_params(examples[0][i].shape[1:], size, generator)
        for out, items in zip(crops, examples, strict=True):
            out.append(crop_or_pad(items[i], corner, size))
    return [torch.stack(c) for c in crops]


@dataclass
class LabelPool:
    """Label maps (each (1, *spatial)) for synthesis, stored compactly (int16 when the values fit, cropped to
    their non-zero bounding box: 20 SynthSeg 256^3 maps cut into coronal slices take 0.5 GB instead of 2.7 GB
    as int64) and handed out as int64 batches."""

    maps: list[torch.Tensor]

    def __post_init__(self):
        self.maps = [_compact(m, crop=False) for m in self.maps]

    def batch(self, n: int, size: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        picks = torch.randint(len(self.maps), (n,), generator=generator).tolist()
        out = []
        for i in picks:
            corner = random_crop_params(self.maps[i].shape[1:], size, generator)
            out.append(crop_or_pad(self.maps[i], corner, size).long())
        return torch.stack(out)

    def values(self) -> list[int]:
        """Every label value that occurs in the pool, sorted, with 0 (crops are padded with it)."""
        return sorted({0, *torch.cat([m.unique() for m in self.maps]).tolist()})


def _compact(m: torch.Tensor, crop: bool = True) -> torch.Tensor:
    """``m`` (1, *spatial) in the smallest fitting int, cropped to its non-zero bounding box if ``crop``."""
    nonzero = m[0].nonzero() if crop else []
    if len(nonzero):
        lo, hi = nonzero.min(0).values.tolist(), (nonzero.max(0).values + 1).tolist()
        m = m[(slice(None), *(slice(a, b) for a, b in zip(lo, hi, strict=True)))]
    top = int(m.max()) if m.numel() else 0
    return m.to(torch.int16 if top < 2**15 else torch.int32).contiguous()


@dataclass
class RealPool:
    """Real (image, label) examples, each (1, *spatial), with the subject each belongs to."""

    images: list[torch.Tensor]
    labels: list[torch.Tensor]
    subjects: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, n: int, size: Sequence[int], generator: torch.Generator):
        x, y = random_crops(n, size, generator, self.images, self.labels)
        return x, y

    def subset(self, keep: Sequence[int]) -> RealPool:
        return RealPool([self.images[i] for i in keep], [self.labels[i] for i in keep],
                        [self.subjects[i] for i in keep])

    def split_by_subject(self, val_fraction: float, seed: int) -> tuple[RealPool, RealPool | None]:
        """Hold out whole subjects (never slices of one subject on both sides)."""
        subjects = sorted(set(self.subjects))
        n_val = int(round(val_fraction * len(subjects)))
        if len(subjects) < 2 or n_val == 0:
            return self, None
        n_val = min(n_val, len(subjects) - 1)
        order = torch.randperm(len(subjects), generator=torch.Generator().manual_seed(seed)).tolist()
        val_subjects = {subjects[i] for i in order[:n_val]}
        train = [i for i, s in enumerate(self.subjects) if s not in val_subjects]
        val = [i for i, s in enumerate(self.subjects) if s in val_subjects]
        return self.subset(train), self.subset(val)


@dataclass
class ImagePool:
    """Unlabeled images, each (1, *spatial), handed out as batches of random crops (the same draws as
    :meth:`RealPool.batch`, without labels)."""

    images: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, n: int, size: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        return random_crops(n, size, generator, self.images)[0]


def _as_examples(array: np.ndarray, spatial_dims: int, axis: int, path, keep=None) -> list[np.ndarray]:
    """One 3D volume or 2D image -> the list of examples the network sees (2D slices for a 2D network)."""
    from .io import slices_3d_to_2d, squeeze_2d

    if array.ndim == 3 and 1 in array.shape:
        array = squeeze_2d(array)
    if array.ndim == spatial_dims:
        return [array]
    if array.ndim == 3 and spatial_dims == 2:
        return slices_3d_to_2d(array, axis, keep=keep)
    raise InputError(path, f"has shape {array.shape}, which a {spatial_dims}D network cannot use")


def load_label_pool(source: str, spatial_dims: int, axis: int, progress: bool = False) -> LabelPool:
    """Read every label map of ``source`` (file, folder or glob), checked, sliced for 2D networks.

    The last pool read is remembered (keyed by the files, their modification times and the slicing): a process
    that trains several runs on the same maps (the experiment scripts: 20 SynthSeg maps take 10-40 s to read)
    reads them once. Each call gets its own list of the (never modified in place) map tensors.
    """
    from .io import list_files

    files = tuple(list_files(source))
    key = (tuple((str(f), f.stat().st_mtime_ns) for f in files), spatial_dims, axis)
    if _LAST_POOL.get("key") != key:
        _LAST_POOL.clear()  # drop the old pool before reading the new one (peak memory)
        _LAST_POOL.update(key=key, maps=_read_label_maps(files, spatial_dims, axis, progress))
    return LabelPool(list(_LAST_POOL["maps"]))


_LAST_POOL: dict = {}


def _read_label_maps(files, spatial_dims: int, axis: int, progress: bool) -> list[torch.Tensor]:
    from tqdm import tqdm

    from .io import check_label_map, read_image

    maps = []
    for path in tqdm(files, desc="label maps", unit="file", disable=not progress or len(files) < 2):
        labels = check_label_map(read_image(path).array, path)
        top = int(labels.max()) if labels.size else 0
        labels = labels.astype(np.int16 if top < 2**15 else np.int32, copy=False)
        for ex in _as_examples(labels, spatial_dims, axis, path, keep=labels):
            maps.append(_compact(torch.from_numpy(np.ascontiguousarray(ex))[None]))
    return maps


def read_manifest(source: str) -> list[tuple[Path, Path, str]]:
    """(image, label, subject) triples from a YAML or CSV manifest, or a folder with images/ and labels/.

    YAML: ``pairs:`` followed by a list of ``{image: ..., label: ..., subject: ...}`` (subject optional:
    defaults to the image file name). CSV: columns ``image,label[,subject]``. Relative paths are relative to
    the manifest's folder.
    Folder: ``images/`` and ``labels/`` hold files paired by name (:func:`learn2synth.io.pair_by_name`: the
    same stem, else the same leading ID token such as ``21`` in ``21_training.tif`` / ``21_manual1.gif``, ...);
    the subject is the matched ID. Files that cannot all be paired one-to-one are refused, naming them.
    """
    from .config import load_yaml
    from .io import list_files, pair_by_name

    path = Path(source)
    if path.is_dir():
        missing = [name for name in ("images", "labels") if not (path / name).is_dir()]
        if missing:
            found = sorted(p.name + "/" for p in path.iterdir() if p.is_dir())
            raise InputError(path, f"a folder of real examples needs images/ and labels/ inside; {missing[0]}/ is "
                                   f"missing (found: {', '.join(found) or 'no sub-folder'}); or give a manifest")
        return pair_by_name(list_files(path / "images"), list_files(path / "labels"), where=path)
    if not path.is_file():
        raise InputError(path, "no such manifest file or folder")
    if path.suffix.lower() in (".yaml", ".yml"):
        rows = load_yaml(path).get("pairs")
    elif path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise InputError(path, "manifest must be .yaml, .yml or .csv (or a folder with images/ and labels/)")
    if not isinstance(rows, list) or not rows:
        raise InputError(path, "manifest needs a non-empty list of {image, label[, subject]} (YAML: under 'pairs')")
    out = []
    for k, row in enumerate(rows):
        if not isinstance(row, dict) or "image" not in row or "label" not in row:
            raise InputError(path, f"entry {k + 1} needs 'image' and 'label'")
        image, label = (path.parent / str(row[key]) for key in ("image", "label"))
        for p in (image, label):
            if not p.exists():
                raise InputError(path, f"entry {k + 1}: file {p} does not exist")
        out.append((image, label, str(row.get("subject") or image.name.split(".")[0])))
    return out


def load_real_pool(source: str, spatial_dims: int, axis: int, normalize_kind: str, mapping=None,
                   n_classes: int | None = None, colour: str = "refuse", orientation: str | None = None,
                   voxel_size=None, progress: bool = False) -> RealPool:
    """Read, check, remap and normalize every (image, label) pair of a manifest or folder.

    With ``orientation`` or ``voxel_size`` (``data.orientation``/``data.voxel_size``: the space of the synthesis's
    label maps), a 3D NIfTI/MGZ pair is first brought into that space (image linearly, labels by nearest
    neighbour), as ``predict``/``segment`` do with a scan: a 2D network then sees real slices cut along the same
    anatomical axis, at the same voxel size, as its synthetic ones, whatever the scans' own orientation.
    With ``n_classes``, labels (after ``mapping``) holding values outside 0..n_classes-1 are refused, naming
    the values (a label set that does not fit the declared classes would otherwise train on scrambled targets);
    with ``n_classes == 2``, binary masks stored as 0/255 (or any 0/v) read as 0/1. ``colour`` says what to do
    with colour images (``"refuse"``, ``"luminance"``, ``"green"``; :func:`learn2synth.io.read_image`).
    ``progress``: a bar over the pairs (bringing a brain scan into the model's space takes tens of seconds).
    """
    from tqdm import tqdm

    from .io import check_classes, check_image, check_pair, read_image, read_label_map
    from .synth.normalize import normalize

    images, labels, subjects = [], [], []
    for image_path, label_path, subject in tqdm(read_manifest(source), desc="real examples", unit="pair",
                                                disable=not progress):
        volume = read_image(image_path, colour=colour)
        image = check_image(volume.array, image_path)
        label = read_label_map(label_path, binary=n_classes == 2 and mapping is None).array
        check_pair(image, label, image_path, label_path)
        if (orientation or voxel_size) and image.ndim == 3 and volume.format in ("nifti", "mgh"):
            image, label = _to_model_space(image, label, volume.affine, orientation, voxel_size)
        if mapping is not None:
            label = mapping(label, path=label_path)
        if n_classes is not None:
            check_classes(label, n_classes, label_path)
        for x, y in zip(_as_examples(image, spatial_dims, axis, image_path, keep=label),
                        _as_examples(label, spatial_dims, axis, label_path, keep=label), strict=True):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
            images.append(normalize(x, normalize_kind)[0])
            labels.append(torch.from_numpy(np.ascontiguousarray(y)).long()[None])
            subjects.append(subject)
    return RealPool(images, labels, subjects)


def _to_model_space(image: np.ndarray, label: np.ndarray, affine, orientation, voxel_size):
    from .geometry import to_model_space

    image = to_model_space(image.astype(np.float32, copy=False), affine, orientation, voxel_size)[0]
    label = to_model_space(label.astype(np.float32), affine, orientation, voxel_size, order=0)[0]
    return image, np.rint(label).astype(np.int64)


def load_image_pool(source: str, spatial_dims: int, axis: int, normalize_kind: str,
                    colour: str = "refuse") -> ImagePool:
    """Read, check and normalize every image of ``source`` (file, folder or glob), without labels; for a 2D
    network, 3D volumes are cut into the slices holding some non-zero voxel."""
    from .io import check_image, list_files, read_image
    from .synth.normalize import normalize

    images = []
    for path in list_files(source):
        image = check_image(read_image(path, colour=colour).array, path)
        for x in _as_examples(image, spatial_dims, axis, path, keep=image != 0):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
            images.append(normalize(x, normalize_kind)[0])
    return ImagePool(images)
