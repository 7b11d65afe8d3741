"""Per-scan intensity refinement of a segmentation's class probabilities (expectation-maximisation).

A contrast-agnostic network has to guess where one tissue ends and the next begins from what the training
contrasts had in common; the scan itself says more: in any one scan each tissue has its own intensity. As in
SAMSEG (Puonti et al., 2016), where a probabilistic atlas is the prior and Gaussian intensity models are fitted
to the scan, here the network's probabilities are the prior and one Gaussian per class is fitted to the scan by
expectation-maximisation; the refined probabilities are prior x likelihood, renormalised. The background class
holds several tissues (sulcal CSF, dura, what a stripping tool left; skull and scalp on a full head), so it gets
a mixture of ``background_components`` Gaussians. Only voxels near the predicted brain (within ``margin``
voxels of a non-background label) take part, less those whose background probability is 1 (outside the image
support, see :func:`learn2synth.inference.predict_volume`); the others keep the network's probabilities.

The network's probabilities already used the intensities, so the prior is sharpened by ``prior_power``
(p^a, renormalised): with ``a = 2`` the scan's likelihood counts at half the weight it would otherwise have.
The probabilities returned are p * L^(1/a) renormalised: the same labels as the fit's posterior p^a * L, and
the network's probabilities unchanged where the scan's likelihood is flat.

Measured with the shipped brain models (``benchmarks/results/segment.md``; ``a``, the three background Gaussians
and the margin were chosen on subject 0001 in its four contrasts only): mainly the boundaries move to where the
scan's own intensities put them; on 0001 T1 white matter called cortex falls from 51k to 20k voxels and
background (sulci, the rim of a stripped brain) called cortex from 180k to 135k.

Written here rather than taken from a library: SAMSEG (FreeSurfer) needs its atlas mesh, and scikit-learn's
``GaussianMixture`` has no per-voxel prior; the loop below is 30 lines of torch and runs on the device of its
inputs (``segment`` passes CPU tensors: about 2.3 s for a 160x192x224 volume, 2.6-2.9 s for 256^3, 2 threads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .synth._util import dilate


def refine(image: torch.Tensor, probs: torch.Tensor, *, prior_power: float = 2.0, background_components: int = 3,
           margin: int = 3, iterations: int = 20, sample: int = 200_000) -> torch.Tensor:
    """Refined class probabilities, shape and dtype of ``probs``.

    Parameters
    ----------
    image : (*spatial) intensities of one scan (any scale: the fit is invariant to it).
    probs : (K, *spatial) class probabilities summing to 1 over K; class 0 is background.
    prior_power : exponent of the network prior (see the module docstring); 1 trusts the scan's likelihood fully.
    background_components : Gaussians of the background class.
    margin : voxels (chessboard distance, in the scan's own grid, not mm) around the predicted non-background
        voxels that take part.
    iterations : expectation-maximisation steps.
    sample : the parameters are fitted on at most this many voxels of the region (a fixed random draw), then
        every voxel of the region gets its posterior.
    """
    if probs.ndim != image.ndim + 1 or probs.shape[1:] != image.shape:
        raise ValueError(f"probs must be (K, *image.shape), got {tuple(probs.shape)} for {tuple(image.shape)}")
    if image.ndim not in (2, 3) or probs.shape[0] < 2:
        raise ValueError("refine needs a 2D or 3D image and at least two classes")
    if not (prior_power > 0 and background_components >= 1 and iterations >= 1 and isinstance(margin, int)
            and margin >= 0 and sample >= 1):
        raise ValueError("refine: needs prior_power > 0, background_components >= 1, iterations >= 1, an integer "
                         "margin >= 0 and sample >= 1")
    image = image.to(probs.device)
    region = fit_region(probs, margin) & (probs[0] < 1 - 1e-6)  # not where background is certain (no support)
    if int(region.sum()) < 10 * (probs.shape[0] + background_components):
        return probs
    x = image[region].float()
    x = (x - x.mean()) / x.std().clamp_min(1e-12)  # the fit is scale-free; float32 needs a sane range
    log_p = probs[:, region].T.float().clamp_min(1e-30).log()
    log_prior = torch.log_softmax(prior_power * log_p, 1)  # p^a renormalised, in logs: nothing underflows
    g = background_components
    fit = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))[:sample].to(x.device)
    resp = torch.cat([_split_by_intensity(x[fit], log_prior[fit, 0].exp(), g), log_prior[fit, 1:].exp()], 1)
    for _ in range(iterations):
        mean, var, log_mix = _gaussians(x[fit], resp, g)
        resp = torch.softmax(_per_component(log_prior[fit], g) + _log_lik(x[fit], mean, var, log_mix, g), 1)
    log_lik = _log_lik(x, mean, var, log_mix, g)
    log_lik = torch.cat([log_lik[:, :g].logsumexp(1, keepdim=True), log_lik[:, g:]], 1)  # per class
    out = probs.clone()
    # p * L^(1/a): the labels of p^a * L (the fit's posterior), and the network's own probabilities where the
    # scan says nothing (a flat likelihood)
    out[:, region] = torch.softmax(log_p + log_lik / prior_power, 1).T.to(probs.dtype)
    return out


def _per_component(log_prior: torch.Tensor, g: int) -> torch.Tensor:
    """(N, K) class log priors as (N, g + K - 1) component log priors: each background Gaussian gets the
    background's."""
    return torch.cat([log_prior[:, :1].expand(-1, g), log_prior[:, 1:]], 1)


def _gaussians(x: torch.Tensor, resp: torch.Tensor, g: int):
    """Maximisation: each component's mean and variance, and the log weights of the first ``g`` (background)."""
    weight = resp.sum(0) + 1e-6
    mean = (resp * x[:, None]).sum(0) / weight
    var = (resp * (x[:, None] - mean) ** 2).sum(0) / weight + 1e-6
    return mean, var, (weight[:g] / weight[:g].sum()).log()


def _log_lik(x, mean, var, log_mix, g):
    """Log Gaussian likelihood of every voxel under every component (the background's weighted by its mixture),
    up to a constant."""
    log_lik = -0.5 * (x[:, None] - mean) ** 2 / var - 0.5 * var.log()
    log_lik[:, :g] += log_mix
    return log_lik


def fit_region(probs: torch.Tensor, margin: int) -> torch.Tensor:
    """Voxels within ``margin`` (chessboard) of a voxel whose most probable class is not background (bool)."""
    inside = (probs[1:].amax(0) > probs[0]).float()[None, None]
    return dilate(inside, margin)[0, 0] > 0


def _split_by_intensity(x: torch.Tensor, background: torch.Tensor, parts: int) -> torch.Tensor:
    """Initial responsibilities of the background mixture: the background probability of each voxel, given to
    the component whose intensity band (equal shares of the likely-background voxels) holds the voxel."""
    likely = x[background > 0.5]
    if likely.numel() < parts:
        likely = x
    ordered = likely.sort().values  # (torch.quantile refuses more than 2^24 values: a full head at 1 mm has more)
    cuts = ordered[(torch.arange(1, parts, device=x.device) * (ordered.numel() - 1)) // parts]
    band = torch.bucketize(x, cuts.contiguous())
    return F.one_hot(band, parts).float() * background[:, None]
