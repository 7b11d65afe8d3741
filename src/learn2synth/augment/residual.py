"""Residual augmenter: a small U-Net that adds a learned, noise-driven residual to the synthetic image.

``y = x + R_theta([x, z])`` with ``z ~ N(0, 1)`` one extra input channel, so the augmenter can produce varied
corruptions from the same image. The last layer starts at zero, so training starts from the identity and the
meta-step only moves away from it when the real loss asks for it.

The noise is drawn by :meth:`ResidualAugmenter.sample` from an explicit generator and applied by
:meth:`ResidualAugmenter.apply`, deterministic and differentiable, so the finite-difference meta-step can
replay the same draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from learn2synth.errors import ConfigError

__all__ = ["ResidualAugmenter", "ACTIVATIONS"]

#: Activations offered (MONAI names; "silu" is MONAI's "swish").
ACTIVATIONS = ("gelu", "silu", "elu", "tanh", "prelu", "relu", "leakyrelu")


class ResidualAugmenter(nn.Module):
    """``image + residual``, the residual from a MONAI U-Net over the image and one channel of N(0, 1) noise.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the image (the output has as many).
        channels: U-Net feature channels per level (at least two levels).
        strides: down-sampling strides (``len(channels) - 1`` values); ``None`` means 2 everywhere. The image
            size must be divisible by their product.
        num_res_units: residual units per U-Net block.
        act: activation (MONAI name). GELU by default: smooth, so the hypergradient is continuous.

    Example:
        >>> aug = ResidualAugmenter(2, channels=(4, 8))
        >>> x = torch.rand(1, 1, 8, 8)
        >>> bool(torch.equal(aug(x, torch.Generator().manual_seed(0)), x))   # identity at initialisation
        True
    """

    renders_synthesis = False  # corrupts synthesized images

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        channels: Sequence[int] = (8, 16, 32),
        strides: Sequence[int] | None = None,
        num_res_units: int = 1,
        act: str = "gelu",
    ):
        super().__init__()
        from monai.networks.layers.factories import Act  # slow import, only when an augmenter is built
        from monai.networks.nets import UNet

        if spatial_dims not in (2, 3):
            raise ConfigError("augmenter.spatial_dims", f"must be 2 or 3, got {spatial_dims!r}")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ConfigError("augmenter.in_channels", f"must be a positive integer, got {in_channels!r}")
        channels = tuple(channels)
        if len(channels) < 2 or not all(isinstance(c, int) and c > 0 for c in channels):
            raise ConfigError("augmenter.channels", f"needs at least two positive integers, got {channels!r}")
        strides = (2,) * (len(channels) - 1) if strides is None else tuple(strides)
        if len(strides) != len(channels) - 1:
            raise ConfigError("augmenter.strides", f"needs {len(channels) - 1} values, got {strides!r}")
        if act not in ACTIVATIONS:
            raise ConfigError("augmenter.act", f"must be one of {', '.join(ACTIVATIONS)}; got {act!r}")
        monai_act = "swish" if act == "silu" else act
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        hidden = channels[0]
        self.unet = UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels + 1,
            out_channels=hidden,
            channels=channels,
            strides=strides,
            num_res_units=num_res_units,
            act=monai_act,
            norm=("instance", {"affine": False, "track_running_stats": False}),
        )
        # The U-Net's last layer is linear; one more activation lets the head mix non-linear features.
        self.activation = Act[monai_act]()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        # Zero-initialised 1x1 convolution: the residual is exactly 0 until the first update.
        self.head = conv(hidden, in_channels, kernel_size=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self._last_rms: Tensor | None = None

    def sample(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Draw the noise channel for a batch like ``x`` (on the generator's device)."""
        shape = (x.shape[0], 1, *x.shape[2:])
        return {"noise": torch.randn(shape, generator=generator, device=generator.device, dtype=x.dtype)}

    def apply(self, x: Tensor, draws: dict[str, Tensor]) -> Tensor:
        """``x + residual(x, noise)``: deterministic given the draw, differentiable in the parameters."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected a (B, {self.in_channels}, *spatial) image with {self.spatial_dims} spatial "
                f"dimensions, got shape {tuple(x.shape)}"
            )
        noise = draws["noise"]
        residual = self.head(self.activation(self.unet(torch.cat([x, noise.to(x)], dim=1))))
        self._last_rms = residual.detach().square().mean().sqrt()
        return x + residual

    def forward(self, x: Tensor, generator: torch.Generator | None = None, *, noise: Tensor | None = None) -> Tensor:
        """Augment ``x`` with noise drawn from ``generator``, or with the given ``noise`` (a replayed draw)."""
        if (generator is None) == (noise is None):
            raise ValueError("pass exactly one of generator (to draw the noise) or noise (to replay a draw)")
        draws = {"noise": noise} if noise is not None else self.sample(x, generator)
        return self.apply(x, draws)

    def bound_(self, max_values) -> None:
        """Nothing to bound: the residual augmenter has no named values (``max_values`` is refused for it)."""

    def learned_values(self) -> dict[str, float]:
        """For logs: the RMS of the residual of the last call (0 before any call)."""
        return {"residual.rms": 0.0 if self._last_rms is None else float(self._last_rms)}
