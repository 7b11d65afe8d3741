"""Every prior hyperparameter of every effect gets a gradient that matches central finite differences."""

import pytest
import torch

from learn2synth.synth import (
    SynthConfig,
    Synthesizer,
    apply_bias_field,
    apply_deform,
    apply_gamma,
    apply_gmm,
    apply_noise,
    apply_resolution,
    phantom_labels,
    sample_bias_field,
    sample_deform,
    sample_gamma,
    sample_gmm,
    sample_noise,
    sample_resolution,
)
from learn2synth.synth._util import blur

F64 = torch.float64
SHAPES = {2: (10, 9), 3: (7, 8, 6)}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def smooth_image(ndim, batch=2):
    x = torch.rand(batch, 1, *SHAPES[ndim], generator=gen(5), dtype=F64)
    return blur(x, torch.full((1,), 1.0, dtype=F64)) + 0.2


def check_gradient(fn, value, eps=1e-6, rtol=1e-4):
    """``fn(h)`` is a scalar; compare d fn / d h by autograd with central differences, component-wise."""
    h = torch.tensor(value, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(fn(h), h)
    fd = torch.zeros_like(grad)
    with torch.no_grad():
        for i in range(h.numel()):
            step = torch.zeros(h.numel(), dtype=F64)
            step[i] = eps
            step = step.reshape(h.shape)
            fd.view(-1)[i] = (fn(h.detach() + step) - fn(h.detach() - step)) / (2 * eps)
    assert grad.abs().sum() > 0, "no gradient arrived"
    torch.testing.assert_close(grad, fd, rtol=rtol, atol=1e-7)


def weighted(out):
    """A fixed random linear functional of the output, so every voxel matters."""
    w = torch.rand(out.shape, generator=gen(9), dtype=F64)
    return (out * w).sum()


DEFORM_DEFAULTS = {"rotation": 10.0, "scaling": 0.1, "shear": 0.05, "translation": 0.05, "elastic_std": 1.5}


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", list(DEFORM_DEFAULTS))
def test_deformation_priors(ndim, name):
    x = smooth_image(ndim)

    def fn(h):
        priors = dict(DEFORM_DEFAULTS, **{name: h})
        params = sample_deform(2, SHAPES[ndim], **priors, integrate_steps=2, generator=gen(), dtype=F64)
        return weighted(apply_deform(x, params))

    check_gradient(fn, DEFORM_DEFAULTS[name])


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", ["mean", "std"])
def test_gmm_priors(ndim, name):
    classes = torch.randint(0, 4, (2, 1, *SHAPES[ndim]), generator=gen())
    default = {"mean": [0.2, 0.8], "std": [0.02, 0.1]}

    def fn(h):
        priors = dict(default, **{name: h})
        return weighted(apply_gmm(classes, sample_gmm(2, 4, SHAPES[ndim], **priors, smooth=0.7, generator=gen())))

    check_gradient(fn, default[name])


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", ["std", "scale"])
def test_bias_priors(ndim, name):
    x = smooth_image(ndim)
    default = {"std": 0.5, "scale": 0.33}

    def fn(h):
        priors = dict(default, **{name: h})
        return weighted(apply_bias_field(x, sample_bias_field(2, SHAPES[ndim], **priors, generator=gen())))

    check_gradient(fn, default[name])


@pytest.mark.parametrize("ndim", [2, 3])
def test_gamma_prior(ndim):
    x = smooth_image(ndim).clamp(0, 1)
    check_gradient(lambda h: weighted(apply_gamma(x, sample_gamma(2, std=h, generator=gen()))), 0.4)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize(("name", "prob_iso"), [("max_res_iso", 1.0), ("max_res_aniso", 0.0)])
def test_resolution_priors(ndim, name, prob_iso):
    x = torch.rand(2, 1, *SHAPES[ndim], generator=gen(4), dtype=F64)

    def fn(h):
        params = sample_resolution(2, ndim, **{name: h}, prob_iso=prob_iso, generator=gen(), dtype=F64)
        return weighted(apply_resolution(x, params))

    check_gradient(fn, 3.3)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("kind", ["gaussian", "rician"])
def test_noise_priors(ndim, kind):
    x = smooth_image(ndim)
    check_gradient(
        lambda h: weighted(apply_noise(x, sample_noise(2, SHAPES[ndim], std=h, kind=kind, generator=gen()))),
        [0.03, 0.12],
    )


@pytest.mark.parametrize("ndim", [2, 3])
def test_gradient_reaches_every_intensity_prior_through_the_whole_pipeline(ndim):
    config = SynthConfig()
    config.noise.enabled = True
    config.bias.scale = 0.2  # at least 2 control points on 24 voxels, else the scale is clamped (no gradient)
    synth = Synthesizer(config, dtype=F64)
    names = [n for n in synth.priors if not n.startswith("deform.")]
    priors = synth.learnable(names)
    labels = phantom_labels(2, (24,) * ndim, n_labels=6, generator=gen())
    image, _, _ = synth(labels, generator=gen(1))
    weighted(image).backward()
    for name, p in zip(names, priors, strict=True):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
