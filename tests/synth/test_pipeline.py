"""The composed pipeline: determinism, replay, per-item draws, label mappings, bad input; 2D and 3D."""

import pytest
import torch

from learn2synth.synth import SynthConfig, Synthesizer, phantom_labels
from learn2synth.synth.pipeline import LabelsConfig

SHAPES = {2: (32, 28), 3: (16, 18, 14)}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def noisy_config():
    config = SynthConfig()
    config.noise.enabled = True
    config.deform.integrate_steps = 3
    return config


@pytest.mark.parametrize("ndim", [2, 3])
def test_same_seed_same_output_bit_for_bit_and_other_seed_differs(ndim):
    labels = phantom_labels(3, SHAPES[ndim], generator=gen())
    synth = Synthesizer(noisy_config())
    a, b, c = (synth(labels, generator=gen(s)) for s in (7, 7, 8))
    assert torch.equal(a.image, b.image) and torch.equal(a.target, b.target)
    assert not torch.equal(a.image, c.image)
    assert a.image.dtype == torch.float32 and a.target.dtype == torch.long
    assert a.image.shape == labels.shape and a.target.shape == labels.shape


@pytest.mark.parametrize("ndim", [2, 3])
def test_recorded_parameters_replay_exactly(ndim):
    labels = phantom_labels(2, SHAPES[ndim], generator=gen())
    synth = Synthesizer(noisy_config())
    image, target, params = synth(labels, generator=gen(3))
    again, target_again = synth.apply(labels, params)
    assert torch.equal(image, again) and torch.equal(target, target_again)


@pytest.mark.parametrize("ndim", [2, 3])
def test_each_item_gets_its_own_draw(ndim):
    one = phantom_labels(1, SHAPES[ndim], generator=gen())
    labels = one.expand(4, *one.shape[1:]).contiguous()  # four copies of the same label map
    image, target, params = Synthesizer(noisy_config())(labels, generator=gen(1))
    for b in range(1, 4):
        assert not torch.equal(image[0], image[b])
        assert not torch.equal(target[0], target[b])  # deformed differently
    assert len(set(params["gmm"]["means"][:, 1].tolist())) == 4
    assert len(set(params["noise"]["sigma"].tolist())) == 4


@pytest.mark.parametrize("ndim", [2, 3])
def test_labels_sharing_an_intensity_class_share_intensity_and_targets_are_remapped(ndim):
    labels = phantom_labels(2, SHAPES[ndim], n_labels=6, generator=gen())
    config = SynthConfig()
    for effect in ("deform", "bias", "gamma", "resolution", "noise"):
        getattr(config, effect).enabled = False
    config.gmm.std = [0.0, 0.0]
    config.normalize = "none"
    config.labels = LabelsConfig(
        generation_labels=[0, 1, 2, 3, 4, 5],
        generation_classes=[0, 1, 2, 3, 1, 2],  # ventricles look like CSF; nuclei like cortex
        segmentation_labels=[0, 1, 2, 3, 1, 4],
    )
    image, target, _ = Synthesizer(config)(labels, generator=gen(2))
    for b in range(2):
        assert torch.unique(image[b][(labels[b] == 1) | (labels[b] == 4)]).numel() == 1
        assert torch.unique(image[b][(labels[b] == 2) | (labels[b] == 5)]).numel() == 1
        assert image[b][labels[b] == 1][0] != image[b][labels[b] == 3][0]
    lut = torch.tensor([0, 1, 2, 3, 1, 4])
    assert torch.equal(target, lut[labels])


def test_unknown_label_values_are_named():
    config = SynthConfig(labels=LabelsConfig(generation_labels=[0, 1, 2]))
    labels = torch.tensor([0, 1, 2, 7]).reshape(1, 1, 2, 2)
    with pytest.raises(ValueError, match=r"\[7\]"):
        Synthesizer(config)(labels, generator=gen())


@pytest.mark.parametrize(
    ("labels", "error"),
    [
        (torch.zeros(1, 1, 8, 8), TypeError),  # float label map
        (torch.zeros(1, 8, 8, dtype=torch.long), ValueError),  # no channel axis
        (torch.zeros(1, 2, 8, 8, dtype=torch.long), ValueError),  # two channels
        (torch.full((1, 1, 8, 8), -1), ValueError),  # negative
    ],
)
def test_bad_label_maps_are_refused(labels, error):
    with pytest.raises(error):
        Synthesizer()(labels, generator=gen())


def test_mismatched_label_lists_are_refused():
    with pytest.raises(ValueError, match="length"):
        Synthesizer(SynthConfig(labels=LabelsConfig(generation_labels=[0, 1], segmentation_labels=[0])))


def test_learnable_rejects_unknown_prior():
    with pytest.raises(KeyError, match="noise.std"):
        Synthesizer().learnable(["noise.sigma"])
