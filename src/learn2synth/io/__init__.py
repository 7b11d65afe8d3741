"""Reading and writing images and label maps, checking them, remapping labels, finding files.

Everything a user can get wrong (a missing file, a corrupted NIfTI, labels with NaN) raises
:class:`learn2synth.errors.InputError` naming the file and the problem.
"""

from learn2synth.io.atomic import atomic_path
from learn2synth.io.discover import (
    file_stem,
    list_files,
    mirrored_names,
    nonempty_slices,
    pair_by_name,
    slices_3d_to_2d,
)
from learn2synth.io.formats import (
    READ_ONLY,
    READABLE,
    SUPPORTED,
    read_image,
    read_label_map,
    supported_extension,
    write_image,
)
from learn2synth.io.labels import LabelMapping, load_label_mapping
from learn2synth.io.npz import read_npz, write_npz
from learn2synth.io.validate import (
    binarize_if_two_valued,
    check_classes,
    check_image,
    check_label_map,
    check_pair,
)
from learn2synth.io.volume import COLOUR_MODES, Volume, squeeze_2d, to_channels_first, to_grayscale

__all__ = [
    "COLOUR_MODES",
    "READABLE",
    "READ_ONLY",
    "SUPPORTED",
    "LabelMapping",
    "Volume",
    "atomic_path",
    "binarize_if_two_valued",
    "check_classes",
    "check_image",
    "check_label_map",
    "check_pair",
    "file_stem",
    "list_files",
    "load_label_mapping",
    "mirrored_names",
    "nonempty_slices",
    "pair_by_name",
    "read_image",
    "read_label_map",
    "read_npz",
    "slices_3d_to_2d",
    "squeeze_2d",
    "supported_extension",
    "to_channels_first",
    "to_grayscale",
    "write_image",
    "write_npz",
]
