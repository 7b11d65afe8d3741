"""Losses of the generators that MONAI does not have: the Gaussian KL term and the contrastive style loss.

The adversarial terms are MONAI's (``PatchAdversarialLoss``, :mod:`.adversarial`). Perceptual losses
(``monai.losses.PerceptualLoss``) need pretrained networks downloaded at run time (LPIPS, RadImageNet, MedicalNet),
which this project cannot fetch: discriminator feature matching takes their place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..synth import apply_gamma, draw_normal, sample_gamma


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the latent elements of each item, averaged over the batch."""
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2).clamp_min(1e-12)) - 1)
    return kl.flatten(1).sum(1).mean()


def style_contrastive_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE between two views' style codes (B, Z): ``a[i]`` and ``b[i]`` (one image and its
    transformed copy) should be more alike, by cosine similarity, than ``a[i]`` and ``b[j]`` of another image.

    Written here because MONAI has no contrastive loss over paired codes (``monai.losses.ContrastiveLoss`` is the
    same NT-Xent but also contrasts ``a[i]`` with ``a[j]``, within one view, which would push apart two slices of
    one contrast when a batch holds several). Zero for a single item.
    """
    if a.shape[0] < 2:
        return a.sum() * 0
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def style_transform(x: torch.Tensor, generator: torch.Generator, gamma_std: float = 0.2,
                    noise_std: float = 0.02) -> torch.Tensor:
    """A randomly transformed copy of images in [0, 1] (B, 1, *spatial) that keeps their contrast: a mild gamma,
    additive noise, and a flip of each spatial axis with probability 1/2 (so the code cannot rely on position)."""
    y = apply_gamma(x, sample_gamma(x.shape[0], std=gamma_std, generator=generator))
    y = y + noise_std * draw_normal(y.shape, generator).to(y.device)
    flips = torch.rand(x.ndim - 2, generator=generator) < 0.5
    dims = [2 + i for i, f in enumerate(flips.tolist()) if f]
    return (y.flip(dims) if dims else y).clamp(0, 1)
