"""Segmentation networks: thin wrappers over MONAI, 2D or 3D by ``spatial_dims``.

Every network returned here outputs raw logits (no softmax) and holds no buffers that change in training, so
it can be evaluated with :func:`torch.func.functional_call` on a parameter dict inside the differentiable
meta-step (:mod:`learn2synth.meta.hypergrad`) without side effects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from learn2synth.errors import ConfigError

#: Normalizations offered by :func:`build_segmenter`.
NORMS = ("instance", "none")
#: Activations offered by :func:`build_segmenter` (MONAI names). Smooth ones (gelu, silu, elu, tanh) give a
#: hypergradient that is continuous in the augmentation parameters; with piecewise-linear ones (prelu, relu,
#: leakyrelu) the inner gradient jumps where a pre-activation changes sign, so the hypergradient is only defined
#: almost everywhere and finite differences across a kink are meaningless.
ACTIVATIONS = ("prelu", "relu", "leakyrelu", "elu", "gelu", "silu", "tanh")


def build_segmenter(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] | None = None,
    num_res_units: int = 1,
    norm: str = "instance",
    dropout: float = 0.0,
    act: str = "prelu",
) -> nn.Module:
    """A MONAI U-Net mapping ``(B, in_channels, *spatial)`` images to ``(B, out_channels, *spatial)`` logits.

    Args:
        spatial_dims: 2 or 3.
        in_channels: number of image channels.
        out_channels: number of classes (background included).
        channels: feature channels per level, from the top; at least two levels.
        strides: down-sampling stride between consecutive levels (``len(channels) - 1`` values); ``None``
            means 2 everywhere. The spatial size of the input must be divisible by the product of the strides.
        num_res_units: residual units per block (0 for plain convolution blocks).
        norm: ``"instance"`` (instance normalization without running statistics) or ``"none"``. Batch
            normalization is refused on purpose: its running statistics are buffers that every forward pass
            updates in place, and the meta-step evaluates the network several times per step (at perturbed
            parameters in finite-difference mode), so the statistics would drift with every evaluation and
            differ between modes.
        dropout: dropout probability in ``[0, 1)``. With dropout, the meta-step replays the global RNG state
            so every evaluation of the synthetic loss sees the same mask.
        act: activation, one of :data:`ACTIVATIONS` (``"prelu"`` is MONAI's default; prefer a smooth one such
            as ``"gelu"`` when the hypergradient matters, see :data:`ACTIVATIONS`).

    Returns:
        The network, in training mode.

    Raises:
        ConfigError: an argument is out of range (the key is ``net.<argument>``).

    Example:
        >>> import torch
        >>> net = build_segmenter(2, 1, 3, channels=(4, 8))
        >>> net(torch.zeros(1, 1, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """
    from monai.networks.nets import UNet  # MONAI is slow to import; keep `import learn2synth.nets` light

    if spatial_dims not in (2, 3):
        raise ConfigError("net.spatial_dims", f"must be 2 or 3, got {spatial_dims!r}")
    for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"net.{key}", f"must be a positive integer, got {value!r}")
    channels = tuple(channels)
    if len(channels) < 2:
        raise ConfigError("net.channels", f"needs at least two levels (e.g. (16, 32)), got {channels!r}")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
        raise ConfigError("net.channels", f"must be positive integers, got {channels!r}")
    strides = (2,) * (len(channels) - 1) if strides is None else tuple(strides)
    if len(strides) != len(channels) - 1:
        raise ConfigError(
            "net.strides",
            f"needs len(channels) - 1 = {len(channels) - 1} values (one per down-sampling), got {strides!r}",
        )
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in strides):
        raise ConfigError("net.strides", f"must be positive integers, got {strides!r}")
    if not isinstance(num_res_units, int) or isinstance(num_res_units, bool) or num_res_units < 0:
        raise ConfigError("net.num_res_units", f"must be a non-negative integer, got {num_res_units!r}")
    if norm == "batch":
        raise ConfigError(
            "net.norm",
            "'batch' is not supported: batch norm updates running statistics in place at every forward "
            "pass, and the meta-step evaluates the network several times per step (at perturbed weights in "
            "'fd' mode); use 'instance' or 'none'",
        )
    if norm not in NORMS:
        raise ConfigError("net.norm", f"must be one of {', '.join(NORMS)}; got {norm!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError("net.dropout", f"must be in [0, 1), got {dropout!r}")
    if act not in ACTIVATIONS:
        raise ConfigError("net.act", f"must be one of {', '.join(ACTIVATIONS)}; got {act!r}")

    monai_norm = ("instance", {"affine": False, "track_running_stats": False}) if norm == "instance" else None
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=channels,
        strides=strides,
        num_res_units=num_res_units,
        norm=monai_norm,
        dropout=dropout,
        act="swish" if act == "silu" else act,  # MONAI calls SiLU "swish"
    )


def build_net(config) -> nn.Module:
    """The segmenter a training config describes (``config.data``, ``config.net``); training and inference build
    it the same way."""
    d, n = config.data, config.net
    return build_segmenter(d.spatial_dims, 1, d.n_classes, channels=tuple(n.channels),
                           strides=None if n.strides is None else tuple(n.strides), num_res_units=n.num_res_units,
                           norm=n.norm, dropout=n.dropout, act=n.act)


def total_stride(channels: Sequence[int], strides: Sequence[int] | None) -> int:
    """The network's total down-sampling factor: input sizes must be multiples of it."""
    return math.prod(strides) if strides is not None else 2 ** (len(channels) - 1)


def padded_forward(fn, x: torch.Tensor, stride: int) -> torch.Tensor:
    """``fn`` applied to ``x`` (B, C, *spatial) zero-padded (centred, like training crops) to a multiple of
    ``stride``, with the output cropped back to ``x``'s spatial size."""
    size = x.shape[2:]
    missing = [-s % stride for s in size]
    pad = []
    for m in reversed(missing):
        pad += [m // 2, m - m // 2]
    out = fn(torch.nn.functional.pad(x, pad) if any(pad) else x)
    return out[(slice(None), slice(None), *(slice(m // 2, m // 2 + s) for m, s in zip(missing, size, strict=True)))]
