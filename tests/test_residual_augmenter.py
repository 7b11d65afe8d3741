import pytest
import torch

from learn2synth.augment.residual import ResidualAugmenter
from learn2synth.errors import ConfigError

SHAPES = {2: (2, 1, 12, 12), 3: (1, 1, 8, 8, 8)}


def _augmenter(dims, in_channels=1):
    torch.manual_seed(0)
    return ResidualAugmenter(dims, in_channels, channels=(4, 8)).double()


def _image(dims, in_channels=1, seed=1):
    shape = (SHAPES[dims][0], in_channels, *SHAPES[dims][2:])
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("dims", [2, 3])
def test_identity_at_initialisation(dims):
    aug = _augmenter(dims, in_channels=2)
    x = _image(dims, in_channels=2)
    y = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, x)
    assert aug.learned_values() == {"residual.rms": 0.0}


@pytest.mark.parametrize("dims", [2, 3])
def test_training_moves_away_from_identity(dims):
    """The first gradient reaches the zero head; after one step every parameter gets a gradient."""
    aug = _augmenter(dims)
    x = _image(dims)
    noise = aug.sample(x, torch.Generator().manual_seed(0))["noise"]
    target = torch.rand_like(x)
    (aug(x, noise=noise) - target).square().mean().backward()
    assert aug.head.weight.grad.abs().sum() > 0
    with torch.no_grad():  # one SGD step (by hand: torch.optim's first use imports torch._dynamo, seconds)
        for p in aug.parameters():
            p -= 0.5 * p.grad
            p.grad = None
    y = aug(x, noise=noise)
    assert not torch.equal(y, x)
    assert aug.learned_values()["residual.rms"] > 0

    (y - target).square().mean().backward()
    for name, p in aug.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("dims", [2, 3])
def test_same_noise_same_output(dims):
    aug = _augmenter(dims)
    with torch.no_grad():  # leave the identity so the noise matters
        aug.head.weight.normal_(generator=torch.Generator().manual_seed(3))
    x = _image(dims)
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    replayed = aug(x, noise=aug.sample(x, torch.Generator().manual_seed(7))["noise"])
    assert torch.equal(a, b) and torch.equal(a, replayed)
    assert not torch.allclose(a, c)
    assert a.shape == x.shape


def test_bad_arguments():
    with pytest.raises(ConfigError):
        ResidualAugmenter(4)
    with pytest.raises(ConfigError):
        ResidualAugmenter(2, channels=(4,))
    with pytest.raises(ConfigError):
        ResidualAugmenter(2, act="softmax")
    aug = ResidualAugmenter(2, channels=(4, 8))
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="exactly one"):
        aug(x)
    with pytest.raises(ValueError, match="exactly one"):
        aug(x, torch.Generator(), noise=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="spatial"):
        aug(torch.rand(1, 1, 8, 8, 8), torch.Generator())

