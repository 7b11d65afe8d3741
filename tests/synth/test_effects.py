"""Each effect against a hand-worked or independent computation, in 2D and 3D."""

import math

import numpy as np
import pytest
import torch

from learn2synth.synth import (
    apply_bias_field,
    apply_deform,
    apply_gamma,
    apply_gmm,
    apply_noise,
    apply_resolution,
    normalize_minmax,
    normalize_quantile,
    sample_bias_field,
    sample_deform,
    sample_noise,
    sample_resolution,
)
from learn2synth.synth.resolution import downsample_upsample

SHAPES = {2: (12, 10), 3: (8, 9, 7)}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def identity_deform(batch, ndim, grid=3, dtype=torch.float32):
    return {
        "matrix": torch.eye(ndim, dtype=dtype).expand(batch, ndim, ndim).clone(),
        "offset": torch.zeros(batch, ndim, dtype=dtype),
        "elastic": torch.zeros(batch, ndim, *[grid] * ndim, dtype=dtype),
        "integrate_steps": 0,
    }


@pytest.mark.parametrize("ndim", [2, 3])
def test_identity_deformation_leaves_labels_and_images_unchanged(ndim):
    labels = torch.randint(0, 5, (2, 1, *SHAPES[ndim]), generator=gen())
    image = torch.rand(2, 1, *SHAPES[ndim], generator=gen(1))
    params = identity_deform(2, ndim)
    assert torch.equal(apply_deform(labels, params), labels)
    torch.testing.assert_close(apply_deform(image, params), image)


@pytest.mark.parametrize("ndim", [2, 3])
def test_integer_translation_shifts_by_whole_voxels(ndim):
    image = torch.rand(1, 1, *SHAPES[ndim], generator=gen())
    params = identity_deform(1, ndim)
    params["offset"][0, 0] = 2.0  # sample from index i + 2 along axis 0
    out = apply_deform(image, params)
    torch.testing.assert_close(out[:, :, :-2], image[:, :, 2:])
    assert out[:, :, -2:].abs().max() < 1e-5  # outside the field of view is zero


def test_quarter_turn_equals_rot90():
    image = torch.rand(1, 1, 9, 9, generator=gen())
    params = identity_deform(1, 2)
    params["matrix"][0] = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    out = apply_deform(image, params)
    # out[i, j] samples image[-j', i'] in centred coordinates: a clockwise quarter turn
    torch.testing.assert_close(out, torch.rot90(image, k=-1, dims=(2, 3)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_scaling_and_squaring_of_zero_velocity_is_identity_and_labels_stay_integer(ndim):
    labels = torch.randint(0, 4, (2, 1, *SHAPES[ndim]), generator=gen())
    params = sample_deform(2, SHAPES[ndim], elastic_std=3.0, integrate_steps=4, generator=gen(2))
    out = apply_deform(labels, params)
    assert out.dtype == labels.dtype and set(out.unique().tolist()) <= set(labels.unique().tolist())
    assert not torch.equal(out, labels)
    params["elastic"].zero_()
    params["matrix"] = torch.eye(ndim).expand(2, ndim, ndim)
    params["offset"].zero_()
    assert torch.equal(apply_deform(labels, params), labels)


@pytest.mark.parametrize("ndim", [2, 3])
def test_gmm_renders_mean_plus_std_times_noise(ndim):
    classes = torch.randint(0, 3, (2, 1, *SHAPES[ndim]), generator=gen())
    means = torch.tensor([[0.1, 0.5, 0.9], [0.3, 0.2, 0.7]])
    stds = torch.tensor([[0.0, 0.1, 0.2], [0.05, 0.0, 0.3]])
    noise = torch.randn(2, 1, *SHAPES[ndim], generator=gen(1))
    out = apply_gmm(classes, {"means": means, "stds": stds, "noise": noise})
    expected = torch.empty_like(noise)
    for b in range(2):
        c = classes[b, 0].numpy()
        expected[b, 0] = torch.from_numpy(means[b].numpy()[c] + stds[b].numpy()[c] * noise[b, 0].numpy())
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("ndim", [2, 3])
def test_bias_field_with_constant_coefficients_is_a_constant_gain(ndim):
    image = torch.rand(2, 1, *SHAPES[ndim], generator=gen())
    params = sample_bias_field(2, SHAPES[ndim], std=1.0, scale=0.3, generator=gen(1))
    params["coeffs"] = torch.full_like(params["coeffs"], 0.5)
    gain = torch.exp(0.5 * params["strength"]).reshape(2, *[1] * (ndim + 1))
    torch.testing.assert_close(apply_bias_field(image, params), image * gain)
    params["strength"] = torch.zeros(2)
    torch.testing.assert_close(apply_bias_field(image, params), image)


def test_bias_field_zoom_one_matches_plain_upsampling():
    coeffs = torch.randn(1, 1, 4, 5, generator=gen())
    image = torch.ones(1, 1, 13, 17)
    params = {"strength": torch.ones(1), "coeffs": coeffs, "zoom": torch.ones(2)}
    expected = torch.nn.functional.interpolate(coeffs, size=(13, 17), mode="bilinear", align_corners=True).exp()
    torch.testing.assert_close(apply_bias_field(image, params), expected)


def test_gamma_is_a_power():
    x = torch.rand(2, 1, 5, 5, generator=gen()) * 0.9 + 0.05
    out = apply_gamma(x, {"log_gamma": torch.tensor([0.0, math.log(2.0)])})
    torch.testing.assert_close(out[0], x[0])
    torch.testing.assert_close(out[1], x[1] ** 2)


def test_downsample_upsample_by_two_hand_worked():
    x = torch.tensor([0.0, 4.0, 2.0, 8.0, 6.0], dtype=torch.float64).reshape(1, 1, 5, 1)
    out = downsample_upsample(x, torch.tensor([[2.0, 1.0]], dtype=torch.float64))
    # lattice at 0, 2, 4 keeps 0, 2, 6; the voxels in between are the mean of their lattice neighbours
    expected = torch.tensor([0.0, 1.0, 2.0, 4.0, 6.0], dtype=torch.float64).reshape(1, 1, 5, 1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("ndim", [2, 3])
def test_resolution_native_is_identity_and_coarse_blurs(ndim):
    image = torch.rand(2, 1, *SHAPES[ndim], generator=gen(), dtype=torch.float64)
    same = apply_resolution(image, {"res": torch.ones(2, ndim, dtype=torch.float64)})
    torch.testing.assert_close(same, image)
    coarse = apply_resolution(image, {"res": torch.full((2, ndim), 3.0, dtype=torch.float64)})
    assert coarse.std() < 0.6 * image.std()  # partial volume removes most of the white-noise variance
    const = torch.full_like(image, 0.7)
    params = sample_resolution(2, ndim, generator=gen(3), dtype=torch.float64)
    torch.testing.assert_close(apply_resolution(const, params), const)


def test_anisotropic_resolution_only_touches_one_axis():
    params = sample_resolution(64, 3, prob_iso=0.0, generator=gen())
    res = params["res"]
    assert torch.all((res > 1).sum(1) == 1) and res.max() <= 8
    params = sample_resolution(64, 3, prob_iso=1.0, max_res_iso=2.0, generator=gen())
    assert torch.all(params["res"] == params["res"][:, :1]) and params["res"].max() <= 2


@pytest.mark.parametrize("ndim", [2, 3])
def test_noise_kinds_follow_their_formulas(ndim):
    x = torch.rand(2, 1, *SHAPES[ndim], generator=gen())
    p = sample_noise(2, SHAPES[ndim], std=(0.1, 0.2), generator=gen(1))
    sigma = p["sigma"].reshape(2, *[1] * (ndim + 1))
    torch.testing.assert_close(apply_noise(x, p), x + sigma * p["z"])
    p = sample_noise(2, SHAPES[ndim], std=(0.1, 0.2), kind="rician", generator=gen(1))
    expected = torch.sqrt((x + sigma * p["z"][:, :1]) ** 2 + (sigma * p["z"][:, 1:]) ** 2)
    torch.testing.assert_close(apply_noise(x, p), expected)
    p = sample_noise(2, SHAPES[ndim], std=(0.0, 0.0), kind="chi", dof=4, generator=gen(1))
    assert p["z"].shape[1] == 4
    torch.testing.assert_close(apply_noise(x, p), x)


def test_rician_noise_on_zero_signal_has_rayleigh_mean():
    sigma = 0.1
    p = sample_noise(1, (200, 200), std=(sigma, sigma), kind="rician", generator=gen())
    mean = apply_noise(torch.zeros(1, 1, 200, 200), p).mean()
    assert abs(float(mean) - sigma * math.sqrt(math.pi / 2)) < 2e-3


def test_normalizations_against_numpy():
    x = torch.randn(3, 1, 11, 13, generator=gen())
    y = normalize_minmax(x)
    assert torch.allclose(y.flatten(1).min(1).values, torch.zeros(3))
    assert torch.allclose(y.flatten(1).max(1).values, torch.ones(3))
    q = normalize_quantile(x, 0.1, 0.9, clip=False)
    for b in range(3):
        flat = x[b].flatten().numpy()
        lo, hi = np.quantile(flat, [0.1, 0.9], method="nearest")
        np.testing.assert_allclose(q[b].flatten().numpy(), (flat - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    assert normalize_quantile(x).min() == 0 and normalize_quantile(x).max() == 1
    with pytest.raises(ValueError):
        normalize_quantile(x, 0.9, 0.1)
