"""Label remapping against a hand-worked example, in NumPy and torch, its inverse and its YAML form."""

import numpy as np
import pytest
import torch

from learn2synth.errors import InputError
from learn2synth.io import LabelMapping, load_label_mapping

# left/right white matter (2, 41) -> class 1, left/right cortex (3, 42) -> class 2, the rest -> 0
MAPPING = {2: 1, 41: 1, 3: 2, 42: 2}
LABELS = np.array([[0, 2, 3], [41, 42, 7], [100, 2, 0]])
CLASSES = np.array([[0, 1, 2], [1, 2, 0], [0, 1, 0]])  # worked out by hand


def test_numpy_against_hand_worked_example():
    out = LabelMapping(MAPPING)(LABELS)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, CLASSES)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
def test_torch_against_hand_worked_example(dtype):
    out = LabelMapping(MAPPING)(torch.as_tensor(LABELS).to(dtype))
    assert out.dtype == torch.int64
    assert torch.equal(out, torch.as_tensor(CLASSES))


def test_unlisted_values_go_to_the_chosen_default():
    out = LabelMapping(MAPPING, default=9)(LABELS)
    np.testing.assert_array_equal(out, np.where(np.isin(LABELS, list(MAPPING)), CLASSES, 9))


def test_unlisted_values_are_an_error_without_default():
    mapping = LabelMapping({0: 0, **MAPPING}, default=None)
    with pytest.raises(InputError, match=r"^seg\.mgz: label values \[7, 100\] are not in the label mapping"):
        mapping(LABELS, path="seg.mgz")
    with pytest.raises(InputError, match=r"label values \[7, 100\]"):
        mapping(torch.as_tensor(LABELS))
    np.testing.assert_array_equal(mapping(np.array([0, 41, 3])), [0, 1, 2])


def test_negative_labels_are_an_error():
    with pytest.raises(InputError, match=r"^a\.png: label map has negative values \(e\.g\. -1\)"):
        LabelMapping(MAPPING)(np.array([0, -1]), path="a.png")


def test_inverse_maps_classes_back_to_the_first_listed_value():
    inverse = LabelMapping(MAPPING).inverse()
    assert inverse.mapping == {1: 2, 2: 3, 0: 0}
    np.testing.assert_array_equal(inverse(CLASSES), [[0, 2, 3], [2, 3, 0], [0, 2, 0]])
    with pytest.raises(InputError, match=r"label values \[5\]"):
        inverse(np.array([5]))


def test_one_to_one_mapping_round_trips():
    values = [0, 2, 3, 4, 41, 42, 43, 2035]
    forward = LabelMapping.from_values(values)
    assert forward.n_classes == len(values)
    labels = np.random.default_rng(0).choice(values, size=(6, 7, 8))
    classes = forward(labels)
    assert classes.max() < len(values)
    np.testing.assert_array_equal(forward.inverse()(classes), labels)
    assert torch.equal(forward.inverse()(forward(torch.as_tensor(labels))), torch.as_tensor(labels))


def test_n_classes_counts_the_default():
    assert LabelMapping(MAPPING).n_classes == 3
    assert LabelMapping({5: 1}, default=4).n_classes == 5
    assert LabelMapping({}, default=0)(np.array([3, 7])).tolist() == [0, 0]


@pytest.mark.parametrize(("mapping", "default"), [({-2: 1}, 0), ({2: 1.5}, 0), ({2: "x"}, 0), ({2: 1}, -1)])
def test_bad_mappings_are_refused(mapping, default):
    with pytest.raises(ValueError, match="is not a non-negative integer"):
        LabelMapping(mapping, default=default)


def test_load_from_yaml(tmp_path):
    (tmp_path / "map.yaml").write_text("mapping:\n  2: 1\n  41: 1\n  '3': 2\n  42: 2\ndefault: 0\n")
    mapping = load_label_mapping(tmp_path / "map.yaml")
    assert mapping.mapping == {2: 1, 41: 1, 3: 2, 42: 2} and mapping.default == 0
    np.testing.assert_array_equal(mapping(LABELS), CLASSES)
    (tmp_path / "strict.yaml").write_text("mapping: {0: 0, 2: 1}\ndefault: null\n")
    assert load_label_mapping(tmp_path / "strict.yaml").default is None
    (tmp_path / "short.yaml").write_text("mapping: {2: 1}\n")
    assert load_label_mapping(tmp_path / "short.yaml").default == 0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("mapping: {2: 1\n", "cannot read the label mapping"),
        ("- 2\n- 3\n", "expected a YAML mapping with a 'mapping' key"),
        ("mapping: {2: 1}\ndefualt: 0\n", r"unknown keys \['defualt'\]"),
        ("mapping: [2, 41]\n", "'mapping' should map label values to classes"),
        ("mapping: {2: -1}\n", "class -1 is not a non-negative integer"),
        ("mapping: {left: 1}\n", "source value 'left' is not a non-negative integer"),
    ],
)
def test_bad_yaml_names_the_file(tmp_path, text, problem):
    (tmp_path / "map.yaml").write_text(text)
    with pytest.raises(InputError, match=r"map\.yaml: " + problem):
        load_label_mapping(tmp_path / "map.yaml")


def test_missing_yaml_names_the_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.yaml: file does not exist"):
        load_label_mapping(tmp_path / "nope.yaml")


def test_shipped_brain_mapping_groups_one_tissue_per_intensity_class():
    """SynthSeg's generation classes in configs/mappings/synthseg_to_tissue4.yaml: left/right halves share an
    intensity, every group but CSF has one target class, and extra-cerebral CSF (24, target background) shares
    the ventricles' intensity (it is the same fluid), so the model must tell them apart by place, not brightness."""
    from pathlib import Path

    from learn2synth.io import load_label_mapping

    mapping = load_label_mapping(Path(__file__).resolve().parents[2] / "configs/mappings/synthseg_to_tissue4.yaml")
    values = [0, 2, 3, 4, 24, 41, 42, 43, 17, 507, 511]
    lists = mapping.synthesis_labels(values)
    cls = dict(zip(values, lists["generation_classes"], strict=True))
    target = dict(zip(values, lists["segmentation_labels"], strict=True))
    assert cls[2] == cls[41] and cls[3] == cls[42] == cls[17] and cls[4] == cls[43] == cls[24]
    assert len({cls[0], cls[2], cls[3], cls[4], cls[507], cls[511]}) == 6  # non-brain labels draw their own
    assert target[24] == 0 and target[4] == 4 and target[17] == 2 and target[3] == 1 and target[507] == 0
    for name, group in mapping.groups.items():
        if name not in ("csf", "cortical_gm"):  # one fluid, one grey matter: targets differ by place
            assert len({int(mapping(np.array([v]))[0]) for v in group}) == 1, name
