"""FID and KID with a segmenter's encoder (learn2synth.feature_distance), against hand-worked values."""

import pytest
import torch

from learn2synth.feature_distance import encoder_blocks, encoder_features, fid, kid
from learn2synth.nets import build_segmenter


@pytest.mark.parametrize("dims", [2, 3])
def test_features_are_the_spatial_means_of_every_encoder_level(dims):
    torch.manual_seed(0)
    net = build_segmenter(dims, 1, 3, channels=(4, 8, 16))
    x = torch.randn(3, 1, *(16,) * dims)
    features = encoder_features(net, x, batch_size=2)
    assert features.shape == (3, 4 + 8 + 16)
    with torch.no_grad():  # the first level by hand: the top down-sampling block on the image itself
        first = net.model[0](x).flatten(2).mean(2)
    torch.testing.assert_close(features[:, :4], first.double())
    assert len(encoder_blocks(net)) == 3
    with pytest.raises(ValueError, match="not a MONAI UNet"):
        encoder_blocks(torch.nn.Conv2d(1, 1, 3))


def test_fid_of_gaussians_matches_the_closed_form():
    # diagonal covariances: FID = |mu1 - mu2|^2 + sum (s1 - s2)^2 = (1 + 4) + (0.25 + 0) = 5.25
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40000, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0])
    b = torch.randn(40000, 2, generator=g, dtype=torch.float64) * torch.tensor([1.5, 2.0]) + torch.tensor([1.0, 2.0])
    assert fid(a, b) == pytest.approx(5.25, abs=0.1)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(1)
    a, b = (torch.randn(200, 8, generator=g) for _ in range(2))
    same, same_sd = kid(a, b, subsets=20, subset_size=50)
    shifted, _ = kid(a, b + 1.0, subsets=20, subset_size=50)
    assert abs(same) < 3 * same_sd + 1e-3
    assert shifted > 5 * (abs(same) + same_sd)
    with pytest.raises(ValueError, match="KID subsets"):
        kid(a[:1], b)
