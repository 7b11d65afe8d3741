"""Random skull stripping: non-brain labels beyond a margin become 0; nothing else changes."""

import pytest
import torch

from learn2synth.synth import SynthConfig, Synthesizer
from learn2synth.synth.strip import apply_strip, brain_mask, sample_strip


def _labels():
    lab = torch.full((1, 1, 9, 9), 7)  # 7: scalp
    lab[..., 3:6, 3:6] = 2  # brain
    return lab


def test_brain_mask_grows_the_brain_by_the_margin_hand_worked():
    lut = torch.zeros(9, dtype=torch.bool)
    lut[[0, 7]] = True
    keep0 = brain_mask(_labels(), lut, torch.tensor([0]))
    keep1 = brain_mask(_labels(), lut, torch.tensor([1]))
    assert int(keep0.sum()) == 9 and int(keep1.sum()) == 25  # 3x3 brain, then 5x5 with a 1-voxel rim
    assert bool(keep1[0, 0, 2:7, 2:7].all())


def test_only_items_drawn_for_stripping_are_stripped():
    lut = torch.zeros(9, dtype=torch.bool)
    lut[7] = True
    labels = _labels().repeat(2, 1, 1, 1)
    image = torch.ones(2, 1, 9, 9)
    out = apply_strip(image, labels, {"strip": torch.tensor([True, False]), "margin": torch.tensor([0, 0])}, lut)
    assert int((out[0] > 0).sum()) == 9 and bool((out[1] == 1).all())


def test_synthesizer_strips_with_the_configured_probability_and_keeps_targets():
    cfg = SynthConfig()
    cfg.strip.enabled, cfg.strip.prob, cfg.strip.labels, cfg.strip.margin = True, 1.0, [0, 7], [0, 0]
    cfg.deform.enabled = False  # the mask follows the deformed labels; compare with the labels as given
    g = torch.Generator().manual_seed(0)
    labels = _labels().repeat(3, 1, 1, 1)
    image, target, params = Synthesizer(cfg)(labels, g)
    assert bool(params["strip"]["strip"].all())
    assert bool((image[labels == 7] == 0).all()) and bool((image[labels == 2] != 0).any())
    assert torch.equal(target, labels)  # targets are the labels' own (no mapping here)
    g = torch.Generator().manual_seed(0)
    assert not bool(sample_strip(1000, prob=0.3, generator=g)["strip"].float().mean().sub(0.3).abs() > 0.05)


@pytest.mark.parametrize("shape, radius", [((2, 1, 17, 13), 2), ((1, 1, 9, 11, 8), 3), ((1, 1, 6, 7), 0)])
def test_dilate_is_scipys_chessboard_dilation(shape, radius):
    from scipy import ndimage

    from learn2synth.synth._util import dilate

    mask = (torch.rand(shape, generator=torch.Generator().manual_seed(1)) > 0.93).float()
    expected = ndimage.maximum_filter(mask.numpy(), size=(1, 1, *[2 * radius + 1] * (len(shape) - 2)),
                                      mode="constant")
    assert torch.equal(dilate(mask, radius), torch.from_numpy(expected))
