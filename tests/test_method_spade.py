"""Method ``spade`` and generated label maps as a label source (``data.labels: labelgen:RUN``)."""

import nibabel as nib
import numpy as np
import pytest
import torch

from learn2synth.checkpoint import load_checkpoint
from learn2synth.errors import ConfigError, InputError
from learn2synth.generative.checkpoints import load_generator
from learn2synth.generative_cmd import train_generator
from learn2synth.rng import derive_seed
from learn2synth.sources import label_pool
from learn2synth.train import train
from test_generative_cli import fresh
from test_train import full_and_resumed, tiny


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("generators")
    for kind in ("labelgen", "spade"):
        train_generator(fresh(kind), root / kind, progress=False, gallery=False)
    style = root / "style.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16)).astype(np.float32), np.eye(4)), style)
    return root


def spade_config(runs, *extra):
    return tiny("spade", f"data.labels=labelgen:{runs / 'labelgen'}", f"spade.model={runs / 'spade'}",
                "data.n_classes=5", "data.phantom_count=5", *extra, shape=(16, 16))


def test_generated_label_source_is_the_label_generators_samples(runs):
    pool = label_pool(spade_config(runs))
    model = load_generator(runs / "labelgen", "labelgen")
    expected = model.sample(5, torch.Generator().manual_seed(derive_seed(0, "generated_labels")))
    assert len(pool.maps) == 5
    assert torch.equal(torch.stack([m.long() for m in pool.maps]), expected)


def test_synthseg_trains_on_generated_label_maps(tmp_path, runs):
    config = tiny("synthseg", f"data.labels=labelgen:{runs / 'labelgen'}", "data.n_classes=5",
                  "data.phantom_count=5", shape=(16, 16))
    metrics = train(config, tmp_path, progress=False, tensorboard=False)
    assert 0 <= metrics["dice_mean"] <= 1


def test_spade_method_renders_with_the_style_images_codes(runs):
    from learn2synth.generative.data import read_style_image
    from learn2synth.train import setup

    method, _ = setup(spade_config(runs, f"spade.style=[{runs / 'style.nii.gz'}]"))
    renderer = method.renderer
    with torch.no_grad():
        code = renderer.style(read_style_image(runs / "style.nii.gz", renderer.config))[0]
    torch.testing.assert_close(method.codes, code)
    values = method.step(0)
    assert np.isfinite(values["loss_spade"])


def test_spade_method_resume_equals_an_uninterrupted_run(tmp_path, runs):
    config = spade_config(runs, "steps=6")
    full, cut = full_and_resumed(config, tmp_path)
    for key, value in full["params"].items():
        assert torch.equal(value, cut["params"][key]), key
    earlier = load_checkpoint(tmp_path / "full" / "step_000004.pt")["state"]["params"]
    assert any(not torch.equal(v, full["params"][k]) for k, v in earlier.items())  # it trained


def test_spade_method_refuses_missing_or_mismatched_generators(runs):
    from learn2synth.train import setup

    with pytest.raises(ConfigError, match="spade.model"):
        setup(tiny("spade", "data.labels=phantom", "spade.model=null", shape=(16, 16)))
    with pytest.raises(ConfigError, match=r"renders \[16, 16\] maps"):
        setup(tiny("spade", "data.labels=phantom", f"spade.model={runs / 'spade'}", shape=(32, 32)))
    with pytest.raises(InputError, match="generates 2D maps of 5 classes"):
        label_pool(tiny("synthseg", f"data.labels=labelgen:{runs / 'labelgen'}", "data.n_classes=6",
                        shape=(16, 16)))
