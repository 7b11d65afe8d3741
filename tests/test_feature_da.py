"""Method feature_da: the segmenter's split, the 4-way discriminator targets, G's reconstruction path, target
labels unused, training from the CLI, bit-exact resume, checkpoint round trip, predict with the trained model."""

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from learn2synth.checkpoint import load_checkpoint, save_checkpoint
from learn2synth.cli import main
from learn2synth.errors import ConfigError
from learn2synth.methods import feature_da as fda
from learn2synth.train import setup, train
from test_train import ROOT, TINY, full_and_resumed, params_of, tiny

STREAMS = ("source_real", "source_fake", "target_real", "target_fake")


def flat(state, prefix=""):
    """Every tensor of a nested state dict, by path."""
    out = {}
    for k, v in state.items() if isinstance(state, dict) else enumerate(state):
        if isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
        elif isinstance(v, dict | list | tuple):
            out.update(flat(v, f"{prefix}{k}."))
    return out


def assert_states_equal(a, b):
    a, b = flat(a), flat(b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("shape", [(32, 32), (16, 16, 16)])
def test_split_segmenter_is_the_unet_itself(shape):
    run, _ = setup(tiny("feature_da", "feature_da.d_layers=2", shape=shape))
    x = torch.randn(2, 1, *shape)
    assert torch.equal(run.classify(run.params, run.embed(run.params, x)), run.logits(run.params, x))
    c_params = {k for k in run.params if k.startswith(run.c_prefix)}
    # C is the last up-sampling block: the only parameters at the output resolution with n_classes outputs
    assert c_params and all(k.startswith("model.2.") for k in c_params) and len(c_params) < len(run.params)


def test_four_way_targets_on_a_hand_worked_example():
    """Every stream's logits are log(0.1, 0.2, 0.3, 0.4) on each patch, so the loss of a stream trained toward
    index i is -log(p_i): the value tells which index each stream is trained toward."""
    logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])).view(1, 4, 1, 1).expand(2, 4, 3, 3)
    streams = dict.fromkeys(STREAMS, logits)
    p = {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}  # index -> probability, by hand
    expected = {
        # D: each stream toward its own output: source-real 0, source-fake 1, target-real 2, target-fake 3
        "d": {"source_real": p[0], "source_fake": p[1], "target_real": p[2], "target_fake": p[3]},
        # G: each domain's fakes toward the reals of the same domain
        "g": {"source_fake": p[0], "target_fake": p[2]},
        # F: source-fake toward target-real, target-fake toward source-real
        "f": {"source_fake": p[2], "target_fake": p[0]},
    }
    for step, targets in (("d", fda.D_TARGETS), ("g", fda.G_TARGETS), ("f", fda.F_TARGETS)):
        losses = fda.domain_losses(streams, targets)
        assert losses.keys() == expected[step].keys()
        for stream, prob in expected[step].items():
            assert math.isclose(float(losses[stream]), -math.log(prob), rel_tol=1e-6), (step, stream)


def test_each_update_uses_its_targets(monkeypatch):
    """One step calls the domain loss three times: D on all four streams, then G, then F with their tables."""
    calls = []
    original = fda.domain_losses
    monkeypatch.setattr(fda, "domain_losses", lambda logits, targets: calls.append(dict(targets)) or
                        original(logits, targets))
    run, _ = setup(tiny("feature_da"))
    run.step(0)
    assert calls == [fda.D_TARGETS, fda.G_TARGETS, fda.F_TARGETS]


def test_patch_classes_are_class_shares_per_patch():
    labels = torch.tensor([[0, 0, 1, 2], [0, 0, 2, 2], [3, 3, 3, 3], [3, 1, 3, 3]]).view(1, 1, 4, 4)
    shares = fda.patch_classes(labels, (2, 2), 4)
    by_hand = torch.tensor([[[1, 0], [0, 0]],  # class 0 per 2x2 patch
                            [[0, 0.25], [0.25, 0]],  # class 1
                            [[0, 0.75], [0, 0]],  # class 2
                            [[0, 0], [0.75, 1]]])  # class 3
    assert torch.allclose(shares[0], by_hand)


def double_run():
    run, _ = setup(tiny("feature_da"))
    run.params = {k: v.detach().double().requires_grad_(True) for k, v in run.params.items()}
    run.net.double()
    run.image_generator.double()
    return run


def test_reconstruction_gradient_reaches_the_embedding():
    """d L1(G(F(x)), x) / d(one weight of F) by autograd equals central differences; C's weights are not in it."""
    run = double_run()
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    z = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    name = "model.0.conv.unit0.conv.weight"  # F's first convolution
    grad = torch.autograd.grad(run.reconstruction_loss(run.params, x, z), run.params[name])[0]
    eps, index = 1e-6, (1, 0, 1, 2)
    values = []
    for sign in (1, -1):
        p = dict(run.params)
        w = p[name].detach().clone()
        w[index] += sign * eps
        p[name] = w
        values.append(float(run.reconstruction_loss(p, x, z).detach()))
    assert grad.abs().sum() > 0
    assert math.isclose(float(grad[index]), (values[0] - values[1]) / (2 * eps), rel_tol=1e-4, abs_tol=1e-9)
    c = [v for k, v in run.params.items() if k.startswith(run.c_prefix)]
    assert all(g is None for g in torch.autograd.grad(run.reconstruction_loss(run.params, x, z), c,
                                                      allow_unused=True))


def test_reconstruction_loss_drops_on_a_fixed_batch():
    """G alone (F fixed) learns to reconstruct one fixed batch: after 40 steps the L1 is under half its start."""
    run, _ = setup(tiny("feature_da", "feature_da.lr_g=0.01"))
    x, _ = run.synth_batch()
    z = run.noise(x)
    with torch.no_grad():
        features = run.embed(run.params, x)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.l1_loss(run.generate(features, z), x)
        losses.append(float(loss.detach()))
        run.module_step(run.g_opt, run.image_generator, loss)
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


@pytest.mark.parametrize("name", ["feature_da", "mixed"])
def test_target_labels_never_reach_a_loss(name):
    """Garbage labels on the target (real) images give bit-identical weights after 3 steps; the control, method
    mixed (which trains on real labels), shows that the check sees a change of labels."""
    states = []
    for garbage in (False, True):
        run, _ = setup(tiny(name))
        if garbage:
            g = torch.Generator().manual_seed(1)
            run.real.labels = [torch.randint(0, 6, y.shape, generator=g) for y in run.real.labels]
        for step in range(3):
            run.step(step)
        states.append(run.state_dict())
    if name == "feature_da":
        assert_states_equal(*states)
    else:
        assert not all(torch.equal(states[0]["params"][k], states[1]["params"][k]) for k in states[0]["params"])


def test_train_from_the_cli_then_predict(tmp_path, capsys):
    run = tmp_path / "run"
    sets = [x for s in [*TINY, "data.shape=[32,32]", "data.n_classes=4"] for x in ("--set", s)]
    assert main(["train", "--config", str(ROOT / "configs" / "feature_da.yaml"), "--quiet", "--out", str(run),
                 *sets]) == 0
    out = capsys.readouterr().out
    assert out.startswith("feature_da: dice_1") and "dice_mean" in out
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert {"loss_seg", "loss_d", "loss_g", "loss_rec", "loss_adv_f", "loss_aux_f"} <= set(header.split(","))
    state = params_of(run)
    start = load_checkpoint(run / "step_000002.pt")["state"]
    for part in ("params", "image_generator", "discriminator"):  # every network learned
        assert any(not torch.equal(state[part][k], start[part][k]) for k in state[part]), part
    # the trained segmenter predicts with `learn2synth predict`, like the segmenter evaluated as C(F(x))
    (tmp_path / "images").mkdir()
    image = np.random.default_rng(0).random((32, 32, 1)).astype(np.float32) + 0.5
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "images" / "a.nii.gz")
    assert main(["predict", "--quiet", "--model", str(run), "--in", str(tmp_path / "images"),
                 "--out", str(tmp_path / "seg")]) == 0
    pred = np.asarray(nib.load(tmp_path / "seg" / "a.nii.gz").dataobj)
    method, _ = setup(tiny("feature_da", "data.n_classes=4"))
    method.load_state_dict(state)
    x = torch.from_numpy(image[..., 0])[None, None]
    x = (x - x.min()) / (x.max() - x.min())  # synth.normalize = minmax, as training
    with torch.no_grad():
        own = method.classify(method.params, method.embed(method.params, x)).argmax(1)[0].numpy()
    assert pred.shape == image.shape and np.array_equal(pred[..., 0], own)


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    config = tiny("feature_da", "steps=6")
    full, cut = full_and_resumed(config, tmp_path)
    assert {"params", "opt", "image_generator", "discriminator", "g_opt", "d_opt"} <= full.keys()
    assert_states_equal(full, cut)
    assert (tmp_path / "full" / "metrics.csv").read_text() == (tmp_path / "cut" / "metrics.csv").read_text()


def test_checkpoint_round_trip(tmp_path):
    """A state saved to a checkpoint file and loaded into a fresh method gives the same state and the same step."""
    run, _ = setup(tiny("feature_da"))
    run.step(0)
    save_checkpoint(tmp_path / "c.pt", config={}, step=1, state=run.state_dict(), rng={})
    fresh, _ = setup(tiny("feature_da"))
    fresh.load_state_dict(load_checkpoint(tmp_path / "c.pt")["state"])
    assert_states_equal(fresh.state_dict(), run.state_dict())
    fresh.generator.set_state(run.generator.get_state())
    run.step(1)
    fresh.step(1)
    assert_states_equal(fresh.state_dict(), run.state_dict())


def test_too_many_discriminator_layers_are_refused_before_any_output(tmp_path, capsys):
    with pytest.raises(ConfigError, match="d_layers"):
        setup(tiny("feature_da", "feature_da.d_layers=3", shape=(16, 16)))
    sets = [x for s in [*TINY, "data.shape=[16,16]", "feature_da.d_layers=3"] for x in ("--set", s)]
    assert main(["train", "--config", str(ROOT / "configs" / "feature_da.yaml"), "--quiet",
                 "--out", str(tmp_path / "r"), *sets]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "feature_da.d_layers" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_adapt_from_trains_the_segmenter_on_segmentation_alone_before_it():
    """Before ``adapt_from`` the segmenter's step is the plain synthseg update on the same source batch."""
    run, _ = setup(tiny("feature_da", "feature_da.adapt_from=5"))
    values = run.step(0)
    assert "loss_adv_f" not in values and "loss_seg" in values
    adapted, _ = setup(tiny("feature_da"))
    assert "loss_adv_f" in adapted.step(0)
    assert not all(torch.equal(run.params[k], adapted.params[k]) for k in run.params)


def test_non_finite_target_images_skip_every_update():
    """NaN target images make every loss non-finite: D, G and the segmenter stay as they were, one skip counted."""
    run, _ = setup(tiny("feature_da"))
    run.target.images = [torch.full_like(x, float("nan")) for x in run.target.images]
    before = {k: v.clone() for k, v in flat(run.state_dict()).items()}
    run.step(0)
    assert run.skipped == 1
    after = flat(run.state_dict())
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def unlabeled_folder(folder, n=2, shape=(32, 32, 3)):
    """NIfTI volumes without labels; slice 0 of each is empty (all zeros)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    volumes = []
    for i in range(n):
        v = (rng.random(shape) * (i + 1)).astype(np.float32)
        v[..., 0] = 0
        nib.save(nib.Nifti1Image(v, np.eye(4)), folder / f"t{i}.nii.gz")
        volumes.append(v)
    return volumes


def test_unlabeled_target_folder_without_any_real_data(tmp_path):
    volumes = unlabeled_folder(tmp_path / "target")
    config = tiny("feature_da", "data.real=null", f"feature_da.target={tmp_path / 'target'}")
    run, val = setup(config)
    assert val is None and run.real is None
    # the non-empty axis-2 slices, each min-max normalized on its own (synth.normalize), in file order
    by_hand = [(s - s.min()) / (s.max() - s.min()) for v in volumes for s in np.moveaxis(v, 2, 0)[1:]]
    assert len(run.target) == len(by_hand) == 4
    for x, ref in zip(run.target.images, by_hand, strict=True):
        np.testing.assert_allclose(x[0].numpy(), ref, atol=1e-6)
    train(config, tmp_path / "run", progress=False, tensorboard=False)
    state, start = params_of(tmp_path / "run"), load_checkpoint(tmp_path / "run" / "step_000002.pt")["state"]
    assert any(not torch.equal(state["discriminator"][k], start["discriminator"][k]) for k in start["discriminator"])


def test_missing_target_or_source_is_a_one_line_error(tmp_path, capsys):
    base = ["train", "--config", str(ROOT / "configs" / "feature_da.yaml"), "--quiet"]
    sets = [x for s in [*TINY, "data.shape=[32,32]"] for x in ("--set", s)]
    cases = {
        "nowhere": (["feature_da.target=" + str(tmp_path / "nowhere")], "nowhere"),
        "no_target": (["data.real=null"], "feature_da.target"),
        "real_source": (["feature_da.source=real"], "feature_da.source"),
    }
    for name, (extra, where) in cases.items():
        code = main([*base, "--out", str(tmp_path / name), *sets, *[x for s in extra for x in ("--set", s)]])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and where in err and "Traceback" not in err, (name, err)
        assert not (tmp_path / name).exists()


def test_real_source_trains_on_the_real_labels(tmp_path):
    """With source real, the labels of data.real are the source's: garbage ones change the weights (the converse
    of test_target_labels_never_reach_a_loss)."""
    unlabeled_folder(tmp_path / "target")
    states = []
    for garbage in (False, True):
        run, _ = setup(tiny("feature_da", "feature_da.source=real", f"feature_da.target={tmp_path / 'target'}"))
        if garbage:
            g = torch.Generator().manual_seed(1)
            run.real.labels = [torch.randint(0, 6, y.shape, generator=g) for y in run.real.labels]
        run.step(0)
        states.append(run.state_dict()["params"])
    assert not all(torch.equal(states[0][k], states[1][k]) for k in states[0])
