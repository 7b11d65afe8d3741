"""``augmenter.lr_final``: the augmenter's learning rate falls by a cosine from ``augmenter.lr`` at the end of
``meta.warmup`` to ``lr * lr_final`` at the last step; the guard's halvings compose with it; resume is exact."""

import math

import pytest
import torch

from learn2synth.errors import ConfigError
from learn2synth.methods.guard import AugmenterGuard
from learn2synth.train import setup
from test_train import full_and_resumed, tiny


def cosine(step, lr, final, start, end):
    """Hand-written reference: lr * (final + (1 - final) (1 + cos(pi t)) / 2), t = (step - start) / (end - start)
    clamped to [0, 1]."""
    t = min(max((step - start) / (end - start), 0.0), 1.0)
    return lr * (final + (1 - final) * (1 + math.cos(math.pi * t)) / 2)


def test_rate_follows_the_cosine_from_warmup_to_the_last_step():
    config = tiny("learn2synth", "augmenter.lr=0.02", "augmenter.lr_final=0.1", "meta.warmup=2", "steps=12",
                  "meta.meta_every=1")
    run, _ = setup(config)
    used = []
    for s in range(12):
        type(run).step(run, s)
        used.append(run.aug_opt.param_groups[0]["lr"])
    # warmup steps take no augmenter step (the rate stays at lr); then the rate of each step's update
    assert used[:2] == [0.02, 0.02]
    for s in range(2, 12):
        assert used[s] == pytest.approx(cosine(s, 0.02, 0.1, 2, 11), rel=1e-12), s
    assert used[-1] == pytest.approx(0.002) and used[2] == pytest.approx(0.02)
    assert used[6] == pytest.approx(0.02 * (0.1 + 0.9 * (1 + math.cos(math.pi * 4 / 9)) / 2))


def test_constant_by_default():
    run, _ = setup(tiny("learn2synth", "augmenter.lr=0.03", "steps=6"))
    for s in range(6):
        type(run).step(run, s)
        assert run.aug_opt.param_groups[0]["lr"] == 0.03


def test_guard_halving_composes_with_the_decay(monkeypatch):
    scores = iter([0.5, 0.1, 0.1])
    monkeypatch.setattr(AugmenterGuard, "score", lambda self, run: next(scores))
    run, _ = setup(tiny("learn2synth", "augmenter.check_every=2", "augmenter.lr=0.02", "augmenter.lr_final=0.5",
                        "steps=8", "meta.meta_every=1", "meta.debias_reference=extra"))
    for s in range(4):  # the check after step 3 reverts: base rate halved
        type(run).step(run, s)
    assert run.guard.reverted == 1 and run.aug_opt.param_groups[0]["base_lr"] == pytest.approx(0.01)
    type(run).step(run, 4)
    assert run.aug_opt.param_groups[0]["lr"] == pytest.approx(cosine(4, 0.01, 0.5, 0, 7))


def test_resume_is_exact_with_the_decay(tmp_path):
    config = tiny("learn2synth", "augmenter.lr_final=0.2", "steps=6")
    full, cut = full_and_resumed(config, tmp_path)
    for key, value in full["augmenter"].items():
        assert torch.equal(value, cut["augmenter"][key]), key
    assert full["aug_opt"]["param_groups"][0]["lr"] == cut["aug_opt"]["param_groups"][0]["lr"]


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1"])
def test_lr_final_outside_its_range_is_refused(value):
    with pytest.raises(ConfigError, match="lr_final"):
        tiny("learn2synth", f"augmenter.lr_final={value}")
