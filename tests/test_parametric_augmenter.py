"""The parametric augmenter against its closed form, replayable draws, and gradients by finite differences."""

import math

import pytest
import torch

from learn2synth.augment.parametric import ParametricAugmenter
from learn2synth.synth._util import resize

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(12, 10), (6, 7, 5)])
def test_closed_form_bias_then_noise(shape):
    aug = ParametricAugmenter(noise="sigma", noise_init=0.1, bias_init=(0.5, 0.2, 0.3)).double()
    x = torch.rand(2, 1, *shape, generator=gen(), dtype=F64)
    draws = aug.sample(x, gen(1))
    field = sum(e * resize(z, shape) for e, z in zip([0.5, 0.2, 0.3], draws["bias"], strict=True))
    expected = x * torch.exp(field) + 0.1 * draws["noise"]
    torch.testing.assert_close(aug.apply(x, draws), expected)
    assert [z.shape[2:] for z in draws["bias"]] == [(p,) * len(shape) for p in (2, 4, 8)]
    assert torch.equal(aug(x, gen(1)), aug.apply(x, draws))  # same generator state, same draw
    values = aug.learned_values()
    assert values["noise.sigma"] == pytest.approx(0.1) and values["bias.middle"] == pytest.approx(0.2)


def test_noise_range_draws_one_sigma_per_item_inside_the_range():
    aug = ParametricAugmenter(noise="range", noise_init=(0.05, 0.2), bias_points=()).double()
    x = torch.zeros(64, 1, 32, 32, dtype=F64)
    out = aug(x, gen())
    sigmas = out.flatten(1).std(1)
    assert sigmas.min() > 0.04 and sigmas.max() < 0.21 and sigmas.std() > 0.02
    lo, hi = aug.sigma_range()
    assert float(lo.detach()) == pytest.approx(0.05) and float(hi.detach()) == pytest.approx(0.2)


@pytest.mark.parametrize("shape", [(10, 9), (6, 5, 7)])
def test_gradients_of_every_learned_value_match_finite_differences(shape):
    aug = ParametricAugmenter(noise="range", noise_init=(0.03, 0.1), bias_init=0.3, gamma_init=0.2,
                              blur_init=0.8).double()
    x = torch.rand(2, 1, *shape, generator=gen(), dtype=F64) * 0.8 + 0.1
    draws = aug.sample(x, gen(1))
    w = torch.rand(x.shape, generator=gen(2), dtype=F64)

    def loss():
        return (aug.apply(x, draws) * w).sum()

    params = list(aug.parameters())
    grads = torch.autograd.grad(loss(), params)
    eps = 1e-6
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            for i in range(p.numel()):
                p.view(-1)[i] += eps
                up = loss()
                p.view(-1)[i] -= 2 * eps
                down = loss()
                p.view(-1)[i] += eps
                fd = (up - down) / (2 * eps)
                assert g.view(-1)[i] != 0
                assert math.isclose(float(g.view(-1)[i]), float(fd), rel_tol=1e-4, abs_tol=1e-7)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="noise"):
        ParametricAugmenter(noise="gauss")
    with pytest.raises(ValueError, match="range"):
        ParametricAugmenter(noise="range", noise_init=(0.2, 0.1))
    with pytest.raises(ValueError, match="bias_init"):
        ParametricAugmenter(bias_init=(0.1, 0.2))


def test_zero_initial_values_are_accepted_and_start_at_about_zero():
    aug = ParametricAugmenter(noise="sigma", noise_init=0.0, bias_init=[1.0, 0.0, 0.0])
    values = aug.learned_values()
    assert values["noise.sigma"] < 1e-7 and values["bias.middle"] < 1e-7 and values["bias.high"] < 1e-7
    assert abs(values["bias.low"] - 1.0) < 1e-6


def test_max_values_cap_the_learned_values_and_unknown_names_are_refused():
    from learn2synth.errors import ConfigError

    aug = ParametricAugmenter(noise="sigma", noise_init=0.9, bias_points=(2, 4), bias_init=(0.1, 0.8))
    aug.bound_({"noise.sigma": 0.2, "bias.4": 0.5})
    values = aug.learned_values()
    assert values["noise.sigma"] == pytest.approx(0.2) and values["bias.4"] == pytest.approx(0.5)
    assert values["bias.2"] == pytest.approx(0.1)  # below its bound: untouched
    ranged = ParametricAugmenter(noise="range", noise_init=(0.1, 0.9), bias_points=())
    ranged.bound_({"noise.sigma_hi": 0.3})
    assert ranged.learned_values() == {"noise.sigma_lo": pytest.approx(0.1), "noise.sigma_hi": pytest.approx(0.3)}
    with pytest.raises(ConfigError, match="noise.std not learned"):
        aug.bound_({"noise.std": 0.2})
