"""Partial volume at a boundary: recipient voxels touching a source take a drawn fraction of its intensity; no other
voxel, no target and no other item changes."""

import pytest
import torch

from learn2synth.synth import SynthConfig, Synthesizer
from learn2synth.synth.partial_volume import boundary_source, sample_partial_volume


def _lut(values, n=10):
    lut = torch.zeros(n, dtype=torch.bool)
    lut[values] = True
    return lut


def test_boundary_source_marks_recipients_touching_a_source_hand_worked():
    # one row: 0 0 0 3 3 | 5 (5 is neither): only the 0 next to the 3s is a boundary voxel
    labels = torch.tensor([[[[0, 0, 0, 3, 3, 5]]]])
    classes = torch.tensor([[[[0, 0, 0, 2, 2, 1]]]])
    near, weight = boundary_source(labels, classes, _lut([3]), _lut([0]))
    assert near.tolist() == [[[[-1, -1, 2, -1, -1, -1]]]] and weight.tolist() == [[[[0, 0, 1, 0, 0, 0]]]]
    # two rings: the second 0 gets half the fraction; the 5 is not a recipient and does not pass the ring on
    near, weight = boundary_source(labels, classes, _lut([3]), _lut([0]), width=2)
    assert near.tolist() == [[[[-1, 2, 2, -1, -1, -1]]]] and weight.tolist() == [[[[0, 0.5, 1, 0, 0, 0]]]]
    blocked = torch.tensor([[[[0, 5, 0, 3]]]])
    near, weight = boundary_source(blocked, blocked.clamp(max=3), _lut([3]), _lut([0]), width=3)
    assert near.tolist() == [[[[-1, -1, 3, -1]]]]
    with pytest.raises(ValueError, match="width"):
        boundary_source(labels, classes, _lut([3]), _lut([0]), width=0)
    # 3D, diagonal neighbours count (3x3x3 neighbourhood); labels above the tables' range are in neither set
    lab3 = torch.zeros(1, 1, 3, 3, 3, dtype=torch.long)
    lab3[..., 0, 0, 0] = 3
    lab3[..., 2, 2, 2] = 42
    near3, _ = boundary_source(lab3, torch.where(lab3 == 3, 4, 0), _lut([3]), _lut([0]))
    assert int((near3 == 4).sum()) == 7 and bool((near3[..., 2, 2, 2] == -1).all())


def _config(fraction, prob=1.0):
    cfg = SynthConfig()
    for effect in (cfg.deform, cfg.bias, cfg.gamma, cfg.resolution):
        effect.enabled = False
    cfg.normalize = "none"
    pv = cfg.partial_volume
    pv.enabled, pv.sources, pv.into, pv.fraction, pv.prob = True, [3], [0], fraction, prob
    return cfg


def _labels(batch=2):
    lab = torch.zeros(batch, 1, 8, 8, dtype=torch.long)
    lab[..., :, 4:] = 3
    return lab


def test_synthesizer_mixes_the_boundary_column_only_by_the_drawn_fraction():
    labels = _labels()
    image, target, params = Synthesizer(_config([0.25, 0.25]))(labels, torch.Generator().manual_seed(0))
    plain = _config([0.0, 0.0])
    plain.partial_volume.enabled = False
    g = torch.Generator().manual_seed(0)
    ref = Synthesizer(plain)
    p = ref.sample(labels, g)
    p["gmm"] = params["gmm"]  # same intensities and texture; the reference has no partial-volume draw
    unmixed = torch.addcmul(p["gmm"]["means"].gather(1, labels.flatten(1)).reshape(labels.shape),
                            p["gmm"]["stds"].gather(1, labels.flatten(1)).reshape(labels.shape), p["gmm"]["noise"])
    source = (p["gmm"]["means"][:, 3].reshape(-1, 1, 1) + p["gmm"]["stds"][:, 3].reshape(-1, 1, 1)
              * p["gmm"]["noise"][:, 0])
    expected = unmixed.clone()
    expected[:, 0, :, 3] = 0.75 * unmixed[:, 0, :, 3] + 0.25 * source[:, :, 3]
    lo, hi = image.flatten(1).min(1).values, image.flatten(1).max(1).values  # the pipeline's min-max scaling
    elo, ehi = expected.flatten(1).min(1).values, expected.flatten(1).max(1).values
    scaled = (expected - elo.reshape(-1, 1, 1, 1)) / (ehi - elo).reshape(-1, 1, 1, 1)
    assert torch.allclose((image - lo.reshape(-1, 1, 1, 1)) / (hi - lo).reshape(-1, 1, 1, 1), scaled, atol=1e-5)
    assert torch.equal(target, labels)


def test_items_not_drawn_and_voxels_off_the_boundary_are_untouched():
    labels = _labels(3)
    on = Synthesizer(_config([0.5, 0.9], prob=1.0))(labels, torch.Generator().manual_seed(1))
    off = Synthesizer(_config([0.5, 0.9], prob=0.0))(labels, torch.Generator().manual_seed(1))
    changed = (on.image != off.image).any(0).any(0)  # (H, W) over items
    assert changed[:, 3].all() and not changed[:, :3].any() and not changed[:, 4:].any()
    assert bool((off.params["partial_volume"]["fraction"] == 0).all())
    f = on.params["partial_volume"]["fraction"]
    assert float(f.min()) >= 0.5 and float(f.max()) <= 0.9


def test_bad_fraction_is_refused():
    with pytest.raises(ValueError, match="fraction"):
        sample_partial_volume(1, (4, 4), fraction=(0.5, 1.5), generator=torch.Generator())


@pytest.mark.parametrize("override, key", [("partial_volume.sources=[3,-1]", "partial_volume.sources[1]"),
                                           ("partial_volume.fraction=[0.2,1.5]", "partial_volume.fraction[1]"),
                                           ("strip.labels=[-2]", "strip.labels[0]")])
def test_bad_label_sets_and_fractions_are_config_errors_naming_the_key(override, key):
    from learn2synth.config import load_config
    from learn2synth.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        load_config(SynthConfig, None, [override])
    assert str(error.value).startswith(key)
