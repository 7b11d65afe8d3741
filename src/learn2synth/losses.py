"""Segmentation losses computed from logits: soft Dice, cross-entropy, Dice + cross-entropy, logit-MSE.

Every loss takes ``logits`` of shape ``(B, C, *spatial)`` (2D or 3D, ``C`` classes including background)
and a label-index map ``target`` of shape ``(B, 1, *spatial)`` (integer dtype, values in ``[0, C)``), and
returns a scalar. They are built from plain differentiable operations, so they can be differentiated twice
(the meta-step needs it). Pick one by name with :func:`get_loss`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from learn2synth.errors import ConfigError

LossFn = Callable[[Tensor, Tensor], Tensor]


def _check(logits: Tensor, target: Tensor) -> None:
    if logits.ndim < 3:
        raise ValueError(f"logits must be (B, C, *spatial), got shape {tuple(logits.shape)}")
    expected = (logits.shape[0], 1, *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must be a label map of shape (B, 1, *spatial) = {expected}, got {tuple(target.shape)}"
        )
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")


def one_hot(target: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(B, 1, *spatial)`` class indices -> ``(B, num_classes, *spatial)`` one-hot of ``dtype``.

    An index outside ``[0, num_classes)`` raises (``scatter`` checks its indices).
    """
    shape = (target.shape[0], num_classes, *target.shape[2:])
    return torch.zeros(shape, dtype=dtype, device=target.device).scatter_(1, target.long(), 1.0)


def soft_dice_loss(logits: Tensor, target: Tensor, *, smooth: float = 1e-5, include_background: bool = True) -> Tensor:
    """``1 - mean Dice`` between softmax probabilities and the one-hot target.

    Per image ``b`` and class ``c``: ``dice = (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)`` over the
    spatial dimensions; the loss averages over images and classes (MONAI ``DiceLoss`` with ``softmax=True``,
    ``to_onehot_y=True``, ``smooth_nr = smooth_dr = smooth``). A class absent from both prediction and target
    scores 1.

    Args:
        logits: ``(B, C, *spatial)``.
        target: ``(B, 1, *spatial)`` class indices.
        smooth: added to numerator and denominator; keeps empty classes finite.
        include_background: if False, class 0 is left out of the mean (needs ``C >= 2``).

    Example:
        >>> logits = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]]]])   # p = 1/2 everywhere, 2 classes, 1x2 image
        >>> target = torch.tensor([[[[1, 1]]]])
        >>> round(soft_dice_loss(logits, target, smooth=0.0).item(), 4)   # Dice: class 0 0/1, class 1 2/3
        0.6667
    """
    _check(logits, target)
    num_classes = logits.shape[1]
    if not include_background and num_classes < 2:
        raise ValueError("include_background=False needs at least two classes")
    probs = torch.softmax(logits, dim=1)
    onehot = one_hot(target, num_classes, probs.dtype)
    dims = tuple(range(2, logits.ndim))
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    if not include_background:
        dice = dice[:, 1:]
    return 1.0 - dice.mean()


def cross_entropy_loss(logits: Tensor, target: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Mean voxel-wise cross-entropy (``torch.nn.functional.cross_entropy`` on ``target[:, 0]``)."""
    _check(logits, target)
    return F.cross_entropy(logits, target[:, 0].long(), label_smoothing=label_smoothing)


def dice_ce_loss(
    logits: Tensor,
    target: Tensor,
    *,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    smooth: float = 1e-5,
    include_background: bool = True,
) -> Tensor:
    """``dice_weight * soft_dice_loss + ce_weight * cross_entropy_loss``."""
    dice = soft_dice_loss(logits, target, smooth=smooth, include_background=include_background)
    return dice_weight * dice + ce_weight * cross_entropy_loss(logits, target)


def logit_mse_loss(logits: Tensor, target: Tensor, *, scale: float = 1.0) -> Tensor:
    """Mean squared error between logits and the one-hot target mapped to ``±scale``.

    The target of class ``c`` at a voxel is ``+scale`` if the voxel belongs to ``c`` and ``-scale`` otherwise,
    so the loss is zero when the true class's logit is ``+scale`` and every other logit is ``-scale``. Unlike
    cross-entropy it does not push logits to infinity, which keeps the inner step's curvature bounded.
    """
    _check(logits, target)
    signed = one_hot(target, logits.shape[1], logits.dtype).mul_(2.0 * scale).sub_(scale)
    return (logits - signed).square().mean()


#: Losses by name, for :func:`get_loss`.
LOSSES: dict[str, LossFn] = {
    "dice": soft_dice_loss,
    "ce": cross_entropy_loss,
    "dice_ce": dice_ce_loss,
    "logit_mse": logit_mse_loss,
}

# Range checks of the keyword options: (test, what it must be).
_OPTION_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "smooth": (lambda x: x >= 0, "must be >= 0"),
    "dice_weight": (lambda x: x >= 0, "must be >= 0"),
    "ce_weight": (lambda x: x >= 0, "must be >= 0"),
    "scale": (lambda x: x > 0, "must be > 0"),
    "label_smoothing": (lambda x: 0 <= x < 1, "must be in [0, 1)"),
    "include_background": (lambda x: isinstance(x, bool), "must be true or false"),
}


def get_loss(name: str, **options) -> LossFn:
    """The loss called ``name`` (one of :data:`LOSSES`) with its keyword ``options`` bound.

    Raises:
        ConfigError: unknown name (key ``loss``), unknown or out-of-range option (key ``loss.<option>``).

    Example:
        >>> loss = get_loss("dice_ce", ce_weight=0.5)
        >>> float(loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))) > 0
        True
    """
    if name not in LOSSES:
        raise ConfigError("loss", f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    fn = LOSSES[name]
    accepted = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    for key, value in options.items():
        if key not in accepted:
            raise ConfigError(f"loss.{key}", f"not an option of loss {name!r}; its options are {', '.join(accepted)}")
        test, must = _OPTION_CHECKS[key]
        try:
            ok = bool(test(value))
        except TypeError:
            ok = False
        if not ok:
            raise ConfigError(f"loss.{key}", f"{must}, got {value!r}")
    if name == "dice_ce" and options.get("dice_weight", 1.0) == 0 and options.get("ce_weight", 1.0) == 0:
        raise ConfigError("loss.dice_weight", "dice_weight and ce_weight cannot both be 0")
    return functools.partial(fn, **options) if options else fn
