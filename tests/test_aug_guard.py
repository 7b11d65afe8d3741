"""The augmenter guard: a worse real validation score reverts the augmenter (and its optimizer) to the last
accepted state exactly and halves its learning rate; a resumed run decides as an uninterrupted one."""

import copy

import pytest
import torch

from learn2synth.errors import ConfigError
from learn2synth.methods.guard import AugmenterGuard
from learn2synth.train import setup
from test_train import full_and_resumed, tiny


@pytest.mark.parametrize("kind", ["learned_priors", "parametric"])
def test_forced_worsening_reverts_theta_exactly(monkeypatch, kind):
    scores = iter([0.5, 0.2, 0.2])
    monkeypatch.setattr(AugmenterGuard, "score", lambda self, run: next(scores))
    run, _ = setup(tiny("learn2synth", f"augmenter.kind={kind}", "augmenter.check_every=2", "meta.meta_every=1"))
    step = type(run).step
    logged = [step(run, s) for s in range(2)][-1]
    assert logged["aug_reverted"] == 0
    saved = copy.deepcopy(run.augmenter.state_dict()), copy.deepcopy(run.aug_opt.state_dict())
    lr = run.aug_opt.param_groups[0]["lr"]
    step(run, 2)
    assert any(not torch.equal(v, saved[0][k]) for k, v in run.augmenter.state_dict().items())  # theta moved
    logged = step(run, 3)  # second check: 0.2 < 0.5 - tolerance
    assert logged["aug_reverted"] == 1 and logged["aug_lr"] == lr / 2
    for k, v in run.augmenter.state_dict().items():
        assert torch.equal(v, saved[0][k]), k
    for key, state in run.aug_opt.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(value, saved[1]["state"][key][name]), (key, name)
    assert {k: logged[k] for k in run.augmenter.learned_values()} == run.augmenter.learned_values()
    step(run, 4), step(run, 5)  # third check: 0.2 is not worse than 0.2, accepted
    assert run.guard.reverted == 1 and run.guard.accepted["augmenter"] is not saved[0]


def test_resume_with_the_guard_is_exact(tmp_path, monkeypatch):
    # every check after the first is worse than the last (a decision that depends on the checkpointed state)
    monkeypatch.setattr(AugmenterGuard, "score", lambda self, run: 1 if self.reference is None else self.reference - 1)
    config = tiny("learn2synth", "augmenter.kind=learned_priors", "augmenter.check_every=2", "steps=8")
    full, cut = full_and_resumed(config, tmp_path)
    for part in ("params", "augmenter"):
        for key, value in full[part].items():
            assert torch.equal(value, cut[part][key]), (part, key)
    assert full["guard"]["reference"] == cut["guard"]["reference"]
    assert full["guard"]["reverted"] == cut["guard"]["reverted"] == 3
    assert full["aug_opt"]["param_groups"][0]["lr"] == cut["aug_opt"]["param_groups"][0]["lr"]
    assert (tmp_path / "full" / "metrics.csv").read_text() == (tmp_path / "cut" / "metrics.csv").read_text()


def test_guard_needs_held_out_real_examples(monkeypatch):
    import learn2synth.sources as sources

    phantom_real = sources.phantom_real
    monkeypatch.setattr(sources, "phantom_real", lambda *a: (phantom_real(*a)[0], None))  # nothing held out
    with pytest.raises(ConfigError, match="augmenter.check_every: needs held-out real examples"):
        setup(tiny("learn2synth", "augmenter.check_every=2"))
