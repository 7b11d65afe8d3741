import math

import pytest
import torch
import torch.nn.functional as F

import learn2synth.losses as losses
from learn2synth.errors import ConfigError
from learn2synth.losses import (
    cross_entropy_loss,
    dice_ce_loss,
    get_loss,
    logit_mse_loss,
    one_hot,
    soft_dice_loss,
)

# A 2x2 image, 2 classes. Probabilities of class 1 (flattened row-major) and the target.
P1 = [0.9, 0.2, 0.6, 0.3]
T = [1, 0, 1, 1]


def _hand_example():
    p1 = torch.tensor(P1, dtype=torch.float64)
    # logits (0, log(p/(1-p))) give softmax probabilities (1-p, p).
    logits = torch.stack([torch.zeros(4, dtype=torch.float64), torch.log(p1 / (1 - p1))]).reshape(1, 2, 2, 2)
    target = torch.tensor(T).reshape(1, 1, 2, 2)
    return logits, target


def _random(spatial, classes=3, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, *spatial, generator=g, dtype=torch.float64)
    target = torch.randint(0, classes, (batch, 1, *spatial), generator=g)
    return logits, target


def test_dice_by_hand():
    logits, target = _hand_example()
    # class 1: intersection 0.9+0.6+0.3 = 1.8, sum p = 2.0, sum t = 3 -> 3.6/5 = 0.72
    # class 0: p0 = (0.1, 0.8, 0.4, 0.7), t0 = (0, 1, 0, 0): intersection 0.8, sum p = 2.0, sum t = 1 -> 1.6/3
    expected = 1 - (0.72 + 1.6 / 3) / 2
    assert soft_dice_loss(logits, target, smooth=0.0).item() == pytest.approx(expected, abs=1e-12)
    assert soft_dice_loss(logits, target, smooth=0.0, include_background=False).item() == pytest.approx(
        1 - 0.72, abs=1e-12
    )
    # smooth enters numerator and denominator
    s = 0.5
    expected_s = 1 - ((3.6 + s) / (5 + s) + (1.6 + s) / (3 + s)) / 2
    assert soft_dice_loss(logits, target, smooth=s).item() == pytest.approx(expected_s, abs=1e-12)


def test_cross_entropy_by_hand():
    logits, target = _hand_example()
    p_true = [0.9, 0.8, 0.6, 0.3]
    expected = -sum(math.log(p) for p in p_true) / 4
    assert cross_entropy_loss(logits, target).item() == pytest.approx(expected, abs=1e-12)


def test_logit_mse_by_hand():
    logits = torch.tensor([[[[2.0, 0.0]], [[-1.0, 1.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    target = torch.tensor([[[[0, 1]]]])
    # signed targets with scale 1: class 0 -> (+1, -1), class 1 -> (-1, +1)
    # squared errors: (2-1)^2, (0+1)^2, (-1+1)^2, (1-1)^2 = 1, 1, 0, 0
    assert logit_mse_loss(logits, target).item() == pytest.approx(0.5, abs=1e-12)
    # scale 2: targets (+2, -2), (-2, +2): errors 0, 4, 1, 1
    assert logit_mse_loss(logits, target, scale=2.0).item() == pytest.approx(6 / 4, abs=1e-12)


@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_cross_entropy_matches_torch(spatial):
    logits, target = _random(spatial)
    expected = F.cross_entropy(logits, target[:, 0])
    torch.testing.assert_close(cross_entropy_loss(logits, target), expected)
    # and the definition: mean of -log softmax at the true class
    manual = -torch.log_softmax(logits, 1).gather(1, target).mean()
    torch.testing.assert_close(cross_entropy_loss(logits, target), manual)


@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_dice_matches_monai(spatial):
    from monai.losses import DiceLoss

    logits, target = _random(spatial)
    for include_background in (True, False):
        monai = DiceLoss(
            softmax=True,
            to_onehot_y=True,
            smooth_nr=1e-3,
            smooth_dr=1e-3,
            include_background=include_background,
        )
        ours = soft_dice_loss(logits, target, smooth=1e-3, include_background=include_background)
        torch.testing.assert_close(ours, monai(logits, target))


@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_dice_ce_is_weighted_sum(spatial):
    logits, target = _random(spatial)
    got = dice_ce_loss(logits, target, dice_weight=0.3, ce_weight=2.0)
    expected = 0.3 * soft_dice_loss(logits, target) + 2.0 * F.cross_entropy(logits, target[:, 0])
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
@pytest.mark.parametrize("spatial", [(3, 2), (2, 2, 2)])
def test_double_backward(name, spatial):
    """gradgradcheck: second derivatives (used by the exact meta-step) match finite differences."""
    logits, target = _random(spatial, batch=1)
    loss = get_loss(name)
    logits.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda x: loss(x, target), (logits,))


def test_perfect_prediction_is_minimal():
    _, target = _random((4, 4), classes=3)
    logits = one_hot(target, 3, torch.float64) * 40 - 20
    assert soft_dice_loss(logits, target, smooth=0.0).item() == pytest.approx(0.0, abs=1e-12)
    assert cross_entropy_loss(logits, target).item() == pytest.approx(0.0, abs=1e-12)
    assert logit_mse_loss(logits, target, scale=20.0).item() == pytest.approx(0.0, abs=1e-12)


def test_get_loss_binds_options():
    logits, target = _random((4, 4))
    expected = logit_mse_loss(logits, target, scale=3.0)
    torch.testing.assert_close(get_loss("logit_mse", scale=3.0)(logits, target), expected)
    assert get_loss("ce") is cross_entropy_loss


@pytest.mark.parametrize(
    ("name", "options", "key"),
    [
        ("focal", {}, "loss"),
        ("dice", {"scale": 1.0}, "loss.scale"),
        ("dice", {"smooth": -1.0}, "loss.smooth"),
        ("logit_mse", {"scale": 0.0}, "loss.scale"),
        ("dice_ce", {"dice_weight": 0.0, "ce_weight": 0.0}, "loss.dice_weight"),
        ("ce", {"label_smoothing": "a"}, "loss.label_smoothing"),
    ],
)
def test_get_loss_errors(name, options, key):
    with pytest.raises(ConfigError) as info:
        get_loss(name, **options)
    assert info.value.key == key


def test_bad_shapes():
    logits, target = _random((4, 4))
    with pytest.raises(ValueError, match="target must be a label map"):
        soft_dice_loss(logits, target[:, 0])
    with pytest.raises(ValueError, match="integer class indices"):
        cross_entropy_loss(logits, target.double())

