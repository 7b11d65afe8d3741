"""Feature distances between two sets of images (FID and KID), measured with a segmenter the project trained.

The usual FID embeds images with an ImageNet Inception network; its weights cannot be downloaded here and were
learned on photographs. Instead the features are those of a trained learn2synth U-Net's encoder (for brain MRI,
the shipped brain model): the global average of every encoder level's activations (the down-sampling blocks
and the bottleneck), concatenated. All levels, not only the bottleneck, because a contrast-agnostic segmenter is
trained to make its deep features blind to the very intensity statistics a realism measure must see; the first
levels still carry them. Numbers from different feature networks are not comparable: report the network.

- ``fid``: the Frechet distance between Gaussian fits of the two feature sets (MONAI's ``FIDMetric``). Biased
  upward for small sets: compare sets of equal size only.
- ``kid``: the kernel inception distance (Binkowski et al. 2018): the unbiased estimate of the squared MMD with
  the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``. Written here because MONAI's ``MMDMetric`` uses
  the linear kernel (a distance between means only) and torchmetrics is not a dependency; about 10 lines. Its
  expectation is 0 for two samples of one distribution, whatever their size, so it suits the tens of images a
  CPU budget allows; it can come out slightly negative.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def encoder_blocks(net: nn.Module) -> list[nn.Module]:
    """The encoder blocks of a MONAI ``UNet`` (``build_segmenter``), top to bottom: each level's down-sampling
    block, then the bottleneck."""
    from monai.networks.layers import SkipConnection

    blocks, m = [], getattr(net, "model", None)
    while isinstance(m, nn.Sequential) and len(m) == 3 and isinstance(m[1], SkipConnection):
        blocks.append(m[0])
        m = m[1].submodule
    if m is None or not blocks:
        raise ValueError(f"not a MONAI UNet: {type(net).__name__}")
    return [*blocks, m]


@torch.no_grad()
def encoder_features(net: nn.Module, images: Tensor, batch_size: int = 16) -> Tensor:
    """Features ``(N, sum of encoder channels)`` of images ``(N, 1, *spatial)`` (normalized as the network was
    trained; spatial sizes divisible by its total stride): each encoder block's output averaged over space."""
    outputs: list[Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: outputs.append(out.flatten(2).mean(2)))
             for b in encoder_blocks(net)]
    was_training = net.training
    net.eval()
    try:
        rows = []
        for start in range(0, len(images), batch_size):
            outputs.clear()
            net(images[start:start + batch_size])
            rows.append(torch.cat(outputs, 1))
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    return torch.cat(rows).double()


def fid(a: Tensor, b: Tensor) -> float:
    """Frechet distance between Gaussian fits of feature sets ``a`` (N, D) and ``b`` (M, D)."""
    from monai.metrics import FIDMetric

    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least 2 feature vectors per set")
    return float(FIDMetric()(a.double(), b.double()))


def kid(a: Tensor, b: Tensor, subsets: int = 10, subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation) over ``subsets`` random subsets of the unbiased squared MMD between feature
    sets ``a`` and ``b`` with the cubic polynomial kernel; ``subset_size`` defaults to the smaller set's size.

    Examples
    --------
    Two 1D points per set, subset = whole set: k(x, y) = (x y + 1)^3, so k(0, 0) = 1, k(0, 1) = 1, k(1, 1) = 8;
    the unbiased MMD^2 of {0, 1} and {0, 0} is k(0,1) + k(0,0) - 2 mean(k(x, y)) = 1 + 1 - 2 = 0, and of {1, 1}
    and {0, 0}: 8 + 1 - 2 = 7.

    >>> kid(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [0.0]]), subsets=1)[0]
    0.0
    >>> kid(torch.tensor([[1.0], [1.0]]), torch.tensor([[0.0], [0.0]]), subsets=1)[0]
    7.0
    """
    a, b = a.double(), b.double()
    n = subset_size or min(len(a), len(b))
    if n < 2 or n > min(len(a), len(b)):
        raise ValueError(f"KID subsets need 2 <= size <= {min(len(a), len(b))}, got {n}")
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g)[:n]]
        y = b[torch.randperm(len(b), generator=g)[:n]]
        kxx, kyy, kxy = ((p @ q.T / a.shape[1] + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        off = 1 - torch.eye(n, dtype=a.dtype)
        values.append(float(((kxx * off).sum() + (kyy * off).sum()) / (n * (n - 1)) - 2 * kxy.mean()))
    t = torch.tensor(values)
    return float(t.mean()), float(t.std()) if len(t) > 1 else 0.0
