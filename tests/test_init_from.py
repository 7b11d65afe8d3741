"""init_from: every method starts from a checkpoint's segmenter weights; a different network is refused; a
resumed run continues from its own checkpoint, bit for bit."""

import pytest
import torch

from learn2synth.errors import InputError
from learn2synth.train import setup, train
from test_train import full_and_resumed, params_of, tiny


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("source")
    train(tiny("synthseg", "steps=2"), out, progress=False, tensorboard=False)
    return out


@pytest.mark.parametrize("name", ["synthseg", "real", "learn2synth"])
def test_weights_equal_the_checkpoint_after_setup(source, name):
    run, _ = setup(tiny(name, f"init_from={source}"))
    stored = params_of(source)["params"]
    assert set(run.params) == set(stored)
    for k, v in stored.items():
        assert torch.equal(run.params[k].detach(), v), k
    assert run.params[k].requires_grad
    fresh, _ = setup(tiny(name))
    assert any(not torch.equal(fresh.params[k], v) for k, v in stored.items())


@pytest.mark.parametrize("change, named", [("data.n_classes=5", "class count 6 in the checkpoint, 5"),
                                           ("net.channels=[4,16]", "channels [4, 8] in the checkpoint, [4, 16]")])
def test_a_different_network_is_refused_in_one_line(source, change, named):
    with pytest.raises(InputError) as e:
        setup(tiny("learn2synth", f"init_from={source}", change))
    assert named in str(e.value) and str(source) in str(e.value) and "\n" not in str(e.value)


def test_resume_with_init_from_is_exact_and_does_not_reload_it(source, tmp_path):
    config = tiny("learn2synth", "steps=6", f"init_from={source}")
    # resume must not read init_from
    full, cut = full_and_resumed(config, tmp_path, between=lambda: setattr(config, "init_from", str(tmp_path / "gone")))
    for part in ("params", "augmenter"):
        for key, value in full[part].items():
            assert torch.equal(value, cut[part][key]), (part, key)
