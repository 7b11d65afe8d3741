"""Label remapping: from the values stored in label maps (e.g. FreeSurfer's 2, 41) to training classes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from learn2synth.errors import InputError

# Lookup tables have one entry per source value up to the largest one; this keeps them under 64 MB.
MAX_SOURCE_VALUE = 2**23


@dataclass(frozen=True)
class LabelMapping:
    """Map label values to classes through a lookup table, for NumPy arrays and torch tensors.

    Parameters
    ----------
    mapping : dict[int, int]
        ``{source_value: target_class}``; several values may share a class (e.g. left and right).
    default : int or None
        Class of the values not in ``mapping``; None makes them an error.

    Examples
    --------
    >>> m = LabelMapping({2: 1, 41: 1, 3: 2}, default=0)
    >>> m(np.array([0, 2, 3, 41, 7]))
    array([0, 1, 2, 1, 0])
    >>> m.inverse()(np.array([0, 1, 2]))
    array([0, 2, 3])
    """

    mapping: dict[int, int]
    default: int | None = 0
    #: label values that share one intensity distribution in synthesis (SynthSeg's generation classes), by name
    groups: dict[str, list[int]] | None = None
    _table: np.ndarray = field(init=False, repr=False, compare=False)
    _listed: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        mapping = {_int(k, "source value"): _int(v, "class") for k, v in dict(self.mapping).items()}
        if self.default is not None:
            object.__setattr__(self, "default", _int(self.default, "default class"))
        if mapping and max(mapping) > MAX_SOURCE_VALUE:
            raise ValueError(f"label values above {MAX_SOURCE_VALUE} are not supported, got {max(mapping)}")
        size = max(mapping, default=-1) + 2  # the last entry stands for every value above the largest listed
        table = np.full(size, 0 if self.default is None else self.default, dtype=np.int64)
        listed = np.zeros(size, dtype=bool)
        table[list(mapping)] = list(mapping.values())
        listed[list(mapping)] = True
        object.__setattr__(self, "mapping", mapping)
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_listed", listed)
        if self.groups is not None:
            groups = {str(k): [_int(v, "group value") for v in vs] for k, vs in dict(self.groups).items()}
            seen: dict[int, str] = {}
            for name, values in groups.items():
                for v in values:
                    if v in seen:
                        raise ValueError(f"label value {v} is in two intensity groups ({seen[v]!r} and {name!r})")
                    seen[v] = name
            object.__setattr__(self, "groups", groups)

    def synthesis_labels(self, values) -> dict:
        """The synthesis's label lists (``synth.labels``) for label maps holding ``values``: each value, its
        intensity class (:meth:`intensity_classes`) and its target class.

        Examples
        --------
        >>> LabelMapping({2: 1, 41: 1}, groups={"wm": [2, 41]}).synthesis_labels([0, 2, 41])
        {'generation_labels': [0, 2, 41], 'generation_classes': [0, 1, 1], 'segmentation_labels': [0, 1, 1]}
        """
        values = [int(v) for v in values]
        return {"generation_labels": values, "generation_classes": self.intensity_classes(values),
                "segmentation_labels": [int(v) for v in self(np.asarray(values))]}

    def intensity_classes(self, values) -> list[int]:
        """Intensity class of each label value (SynthSeg's generation classes): values of one group share a
        class, every other value has its own, numbered in the order of ``values``.

        Examples
        --------
        >>> LabelMapping({2: 1, 41: 1}, groups={"wm": [2, 41]}).intensity_classes([0, 2, 41, 24])
        [0, 1, 1, 2]
        """
        owner = {v: name for name, vs in (self.groups or {}).items() for v in vs}
        index: dict = {}
        return [index.setdefault(owner.get(int(v), ("own", int(v))), len(index)) for v in values]

    @classmethod
    def from_values(cls, values, default: int | None = None) -> LabelMapping:
        """Classes 0, 1, 2, ... for the given label values, in order.

        Examples
        --------
        >>> LabelMapping.from_values([0, 2, 41]).mapping
        {0: 0, 2: 1, 41: 2}
        """
        return cls({int(v): i for i, v in enumerate(values)}, default=default)

    @property
    def n_classes(self) -> int:
        """Number of classes: the largest class (including the default) plus one."""
        classes = list(self.mapping.values()) + ([] if self.default is None else [self.default])
        return max(classes, default=-1) + 1

    def __call__(self, labels, path: str | os.PathLike | None = None):
        """Map a label array (NumPy, or torch tensor on any device) to classes, as int64.

        Parameters
        ----------
        labels : np.ndarray or torch.Tensor
            Non-negative integer labels.
        path : str or PathLike, optional
            File the labels came from, named in errors.

        Raises
        ------
        InputError
            If ``labels`` has negative values, or values not in the mapping when ``default`` is None.
        """
        is_numpy = isinstance(labels, np.ndarray) or not hasattr(labels, "device")
        if is_numpy:
            labels = np.asarray(labels)
        size = labels.size if is_numpy else labels.numel()
        lo, hi = (int(labels.min()), int(labels.max())) if size else (0, 0)
        if lo < 0:
            raise InputError(path, f"label map has negative values (e.g. {lo})")
        index = labels.clip(max=len(self._table) - 1) if hi >= len(self._table) else labels
        if is_numpy:
            index = index.astype(np.intp, copy=False)
            table, listed = self._table, self._listed
        else:
            import torch

            index = index.long()
            table = torch.as_tensor(self._table, device=labels.device)
            listed = torch.as_tensor(self._listed, device=labels.device)
        if self.default is None and not bool(listed[index].all()):
            unknown = labels[~listed[index]]
            values = sorted({int(v) for v in unknown.reshape(-1)[:1000].tolist()})[:10]
            raise InputError(
                path, f"label values {values} are not in the label mapping (and it has no default)"
            )
        return table[index]

    def inverse(self) -> LabelMapping:
        """The mapping from classes back to label values.

        When several values share a class, the first one listed in ``mapping`` stands for it. The default
        class, if no value is mapped to it explicitly, goes back to 0 (unlisted values are background).
        Classes that nothing maps to are an error.
        """
        back: dict[int, int] = {}
        for value, target in self.mapping.items():
            back.setdefault(target, value)
        if self.default is not None:
            back.setdefault(self.default, 0)
        return LabelMapping(back, default=None)


def load_label_mapping(path: str | os.PathLike) -> LabelMapping:
    """Read a label mapping from YAML: ``{mapping: {2: 3, 41: 3, ...}, default: 0, groups: {wm: [2, 41]}}``.

    ``default`` is optional (0); ``default: null`` makes unlisted values an error. ``groups`` (optional) names
    the label values that share one intensity distribution when synthesizing (left/right halves, one tissue).

    Raises
    ------
    InputError
        Missing file, invalid YAML, unknown keys, non-integer or negative values; the message names the file.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist" if not path.exists() else "is a folder, expected a file")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(path, f"cannot read the label mapping: {e}") from e
    if not isinstance(data, dict) or "mapping" not in data:
        raise InputError(
            path, "expected a YAML mapping with a 'mapping' key, e.g. {mapping: {2: 1, 41: 1}, default: 0}"
        )
    unknown = sorted(set(data) - {"mapping", "default", "groups"})
    if unknown:
        raise InputError(path, f"unknown keys {unknown}; expected 'mapping' and optionally 'default', 'groups'")
    if data.get("groups") is not None and not (
            isinstance(data["groups"], dict) and all(isinstance(v, list) for v in data["groups"].values())):
        raise InputError(path, "'groups' should map names to lists of label values, e.g. {wm: [2, 41]}")
    if not isinstance(data["mapping"], dict):
        raise InputError(path, "'mapping' should map label values to classes, e.g. {2: 1, 41: 1}")
    try:
        return LabelMapping(data["mapping"], default=data.get("default", 0), groups=data.get("groups"))
    except ValueError as e:
        raise InputError(path, str(e)) from e


def _int(value, what: str) -> int:
    """A non-negative int from an int, or a string or float holding one (YAML keys may be quoted)."""
    try:
        number = int(value)
        ok = not isinstance(value, bool) and number == float(value) and number >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{what} {value!r} is not a non-negative integer")
    return number
