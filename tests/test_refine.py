"""The per-scan intensity refinement (``learn2synth.refine``) against an independent numpy EM, and its guarantees."""

import numpy as np
import pytest
import torch

from learn2synth.refine import fit_region, refine


def _numpy_em(x, prior, g, power, iterations, fit=None):
    """Expectation-maximisation written out in float64 numpy (as a textbook states it, no logs): prior^power
    x Gaussian, a g-Gaussian mixture for class 0; the initial background split by intensity bands. Fitted on
    the voxels ``fit`` (all by default); returns prior x likelihood^(1/power), renormalised, for every voxel."""
    fit = np.arange(len(x)) if fit is None else fit
    p = prior ** power
    p /= p.sum(1, keepdims=True)
    xf, pf = x[fit], p[fit]
    likely = np.sort(xf[pf[:, 0] > 0.5])
    cuts = likely[(np.arange(1, g) * (len(likely) - 1)) // g]
    band = np.searchsorted(cuts, xf, side="left")
    resp = np.concatenate([np.eye(g)[band] * pf[:, :1], pf[:, 1:]], 1)
    full = np.concatenate([np.repeat(pf[:, :1], g, 1), pf[:, 1:]], 1)

    def likelihood(v, mu, var, w):
        lik = np.exp(-0.5 * (v[:, None] - mu) ** 2 / var) / np.sqrt(var)
        lik[:, :g] *= w[:g] / w[:g].sum()
        return lik

    for _ in range(iterations):
        w = resp.sum(0) + 1e-6
        mu = (resp * xf[:, None]).sum(0) / w
        var = (resp * (xf[:, None] - mu) ** 2).sum(0) / w + 1e-6
        resp = full * likelihood(xf, mu, var, w)
        resp /= resp.sum(1, keepdims=True)
    lik = likelihood(x, mu, var, w)
    per_class = np.concatenate([lik[:, :g].sum(1, keepdims=True), lik[:, g:]], 1)
    out = prior * per_class ** (1 / power)
    return out / out.sum(1, keepdims=True)


def _scene(seed=0, shape=(40, 36), noise=0.12):
    """Background (two intensities), a class-1 band with a one-pixel dark gap, a class-2 block; noisy priors."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int64)
    truth[8:32, 6:30] = 2
    truth[8:32, 6:12] = 1
    truth[8:32, 9] = 0  # a "sulcus" inside the class-1 band
    means = np.array([0.2, 0.55, 0.9])
    image = means[truth] + noise * rng.standard_normal(shape)  # 0.12: the classes overlap, the prior matters
    image[:3] = 1.2  # bright non-brain tissue at the edge: a second background intensity
    truth[:3] = 0
    logits = 2.0 * np.eye(3)[truth] + rng.standard_normal((*shape, 3))
    logits[8:32, 9] = [0.0, 0.8, -2.0]  # the prior calls the gap class 1 (0.67), as a network paints a sulcus cortex
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return image.astype(np.float32), np.moveaxis(probs, -1, 0).astype(np.float32), truth


def test_refine_matches_a_numpy_em_written_out():
    image, probs, _ = _scene()
    out = refine(torch.from_numpy(image), torch.from_numpy(probs), margin=40).numpy()
    x = image.ravel().astype(np.float64)
    x = (x - x.mean()) / x.std(ddof=1)
    expected = _numpy_em(x, probs.reshape(3, -1).T.astype(np.float64), 3, 2.0, 20)
    np.testing.assert_allclose(out.reshape(3, -1).T, expected, atol=2e-4)
    assert np.abs(out - probs).max() > 0.1  # it changed something: the comparison can fail


def test_the_scan_corrects_what_the_prior_got_wrong_and_the_scale_does_not_matter():
    image, probs, truth = _scene(1, noise=0.03)
    before = (probs.argmax(0) == truth).mean()
    out = refine(torch.from_numpy(image), torch.from_numpy(probs)).numpy()
    assert (out.argmax(0) == truth).mean() > before + 0.03
    assert (out.argmax(0)[8:32, 9] == 0).all()  # the dark gap is background again
    scaled = refine(torch.from_numpy(image * 250.0 + 40.0), torch.from_numpy(probs)).numpy()
    np.testing.assert_allclose(scaled, out, atol=1e-4)


def _scene3d(seed=5):
    """A 3D brain-like block with uncertain probabilities, zero padding next to it (certain background), and
    uncertain voxels most likely background far from it."""
    rng = np.random.default_rng(seed)
    image = np.zeros((30, 24, 20), np.float32)
    probs = np.zeros((3, 30, 24, 20), np.float32)
    probs[0] = 1.0  # outside the support: certain background
    image[4:20, 4:20, 4:16] = 0.3 + 0.05 * rng.standard_normal((16, 16, 12))
    image[8:16, 8:16, 6:14] = 0.8 + 0.05 * rng.standard_normal((8, 8, 8))
    soft = rng.dirichlet([1, 1, 1], (16, 16, 12)).astype(np.float32)
    probs[:, 4:20, 4:20, 4:16] = np.moveaxis(soft, -1, 0)
    image[4:20, 4:20, 16:18] = 0.5 + 0.05 * rng.standard_normal((16, 16, 2))  # a rim along the last axis:
    probs[:, 4:20, 4:20, 16:18] = np.array([0.7, 0.2, 0.1], np.float32)[:, None, None, None]  # likely background
    image[26:29, 4:20, 4:16] = 0.8  # far from the brain: background, not certain
    probs[:, 26:29, 4:20, 4:16] = np.array([0.6, 0.3, 0.1], np.float32)[:, None, None, None]
    return image, probs


def test_the_3d_fit_on_a_draw_of_the_region_matches_the_numpy_em():
    from scipy import ndimage

    image, probs = _scene3d()
    out = refine(torch.from_numpy(image), torch.from_numpy(probs), margin=2, sample=1500).numpy()
    brain = probs[1:].max(0) > probs[0]
    region = ndimage.maximum_filter(brain, size=5) & (probs[0] < 1 - 1e-6)  # chessboard dilation by 2
    assert 1500 < region.sum() < region.size
    x = image[region].astype(np.float64)
    x = (x - x.mean()) / x.std(ddof=1)
    fit = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:1500].numpy()  # refine's draw
    expected = _numpy_em(x, probs[:, region].T.astype(np.float64), 3, 2.0, 20, fit)
    np.testing.assert_allclose(out[:, region].T, expected, atol=2e-4)
    np.testing.assert_array_equal(out[:, ~region], probs[:, ~region])  # the far voxels and the padding
    assert np.abs(out[:, region] - probs[:, region]).max() > 1e-2
    np.testing.assert_allclose(out.sum(0), 1, atol=1e-5)


def test_certain_background_stays_out_of_the_fit():
    image, probs = _scene3d()
    out = refine(torch.from_numpy(image), torch.from_numpy(probs)).numpy()
    bright = image.copy()
    bright[probs[0] == 1.0] = 5.0  # the padding next to the brain: it would pull a background Gaussian
    np.testing.assert_allclose(refine(torch.from_numpy(bright), torch.from_numpy(probs)).numpy(), out, atol=1e-6)


def test_too_few_voxels_to_fit_changes_nothing():
    image, probs = _scene3d()
    probs[:] = 0.0
    probs[0] = 1.0
    probs[:, 10, 10, 10] = [0.2, 0.5, 0.3]  # one voxel of brain: 27 in the region, fewer than 10 per component
    np.testing.assert_array_equal(refine(torch.from_numpy(image), torch.from_numpy(probs), margin=1).numpy(),
                                  probs)


def test_an_outlier_only_an_impossible_class_explains_still_gets_probabilities_summing_to_1():
    image, probs, _ = _scene(4)
    probs[:, 20, 20] = [0.5, 0.5, 0.0]
    image[20, 20] = 50.0
    out = refine(torch.from_numpy(image), torch.from_numpy(probs)).numpy()
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(0), 1, atol=1e-5)


def test_a_flat_likelihood_leaves_the_networks_probabilities():
    _, probs, _ = _scene(6)
    out = refine(torch.full(probs.shape[1:], 3.0), torch.from_numpy(probs)).numpy()
    np.testing.assert_allclose(out, probs, atol=1e-5)


def test_a_strong_prior_keeps_the_networks_clear_labels():
    image, probs, _ = _scene(3)
    out = refine(torch.from_numpy(image), torch.from_numpy(probs), prior_power=1000.0).numpy()
    top2 = np.sort(probs, 0)[-2:]
    clear = top2[1] > 2 * top2[0]  # 2^1000 outweighs any likelihood ratio of this scene
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(out.argmax(0)[clear], probs.argmax(0)[clear])
    weak = refine(torch.from_numpy(image), torch.from_numpy(probs)).numpy()
    assert (weak.argmax(0)[clear] != probs.argmax(0)[clear]).any()  # at the default power the scan does matter


def test_fit_region_is_a_chessboard_dilation_of_the_predicted_brain():
    probs = torch.zeros(2, 9, 9)
    probs[0] = 1.0
    probs[:, 4, 4] = torch.tensor([0.2, 0.8])
    region = fit_region(probs, 2)
    expected = torch.zeros(9, 9, dtype=torch.bool)
    expected[2:7, 2:7] = True
    assert torch.equal(region, expected)


@pytest.mark.parametrize("bad", [dict(prior_power=0.0), dict(background_components=0), dict(iterations=0),
                                 dict(margin=1.5), dict(margin=-1), dict(sample=0)])
def test_bad_settings_and_shapes_are_refused(bad):
    image, probs, _ = _scene()
    with pytest.raises(ValueError):
        refine(torch.from_numpy(image), torch.from_numpy(probs), **bad)
    with pytest.raises(ValueError, match="probs must be"):
        refine(torch.from_numpy(image[:-1]), torch.from_numpy(probs))
