"""method gan_synth: the pix2pix GAN, mask composition, the progressive realism weight, training, resume, CLI."""

import csv
import math
from pathlib import Path

import pytest
import torch

from learn2synth.checkpoint import load_checkpoint
from learn2synth.cli import main
from learn2synth.generative.compose import compose_masks
from learn2synth.generative.pix2pix import (
    Pix2Pix,
    Pix2PixTrainer,
    clipped_bce_realism,
    percentile,
    realism,
    schedule_factor,
)
from learn2synth.synth import phantom_labels
from learn2synth.train import restore, setup, train
from learn2synth.train_config import load_train_config
from test_train import full_and_resumed

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "gan_synth.yaml"
TINY = ["net.channels=[4,8]", "log_every=1", "val_every=100", "checkpoint_every=2", "keep_checkpoints=10",
        "threads=1", "data.phantom_real.train_count=3", "data.phantom_real.test_count=2", "batch_size=2",
        "real_batch_size=2", "data.shape=[32,32]", "gan.generator_channels=[4,8]", "gan.discriminator_channels=8",
        "gan.pretrain_steps=2", "gan.epoch_steps=2"]


def tiny(*extra):
    return load_train_config(CONFIG, [*TINY, *extra])


def flat(state, prefix=""):
    """Every tensor and number of a nested state dict, by dotted key."""
    if isinstance(state, dict):
        return {k: v for key, sub in state.items() for k, v in flat(sub, f"{prefix}{key}.").items()}
    if isinstance(state, (list, tuple)):
        return {k: v for i, sub in enumerate(state) for k, v in flat(sub, f"{prefix}{i}.").items()}
    return {prefix: state}


def assert_same_state(a, b):
    a, b = flat(a), flat(b)
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def rows(folder):
    with open(Path(folder) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# ---- the schedule and the realism score -------------------------------------------------------------------------

def test_schedule_is_alpha_log_epoch_plus_one_and_zero_in_the_first_epoch():
    assert [schedule_factor(s, 10, 0.5) for s in range(10)] == [0.0] * 10
    # step 25 of epochs of 10 steps is epoch t = 2: 0.5 * ln 3 = 0.5 * 1.0986123 = 0.5493061
    assert schedule_factor(25, 10, 0.5) == pytest.approx(0.5493061, abs=1e-7)
    assert schedule_factor(25, 10, 0.5) * 0.8 == pytest.approx(0.4394449, abs=1e-7)  # times a realism of 0.8


def test_clipped_bce_realism_is_one_minus_clipped_bce_in_unit_range_and_monotone():
    # hand values: 1 - ln(1 + e^-z); z = 0 -> 1 - 0.6931472, z = 2 -> 1 - 0.1269280, z = -1 -> BCE 1.313 clipped -> 0
    z = torch.tensor([0.0, 2.0, -1.0]).reshape(3, 1, 1, 1).expand(3, 1, 4, 4)
    assert clipped_bce_realism(z).tolist() == pytest.approx([0.3068528, 0.8730720, 0.0], abs=1e-6)
    # patches averaged before clipping: z = (0, 2) -> 1 - (0.6931472 + 0.1269280) / 2
    two = torch.tensor([0.0, 2.0]).reshape(1, 1, 1, 2)
    assert float(clipped_bce_realism(two)) == pytest.approx(0.5899624, abs=1e-6)
    sweep = torch.linspace(-10, 10, 401).reshape(-1, 1, 1, 1)
    r = clipped_bce_realism(sweep)
    assert r.min() >= 0 and r.max() <= 1 and r[0] == 0 and r[-1] > 0.9999
    assert (r.diff() >= 0).all()
    assert (r[sweep.flatten() > -0.5].diff() > 0).all()  # strictly increasing where the BCE is below 1


def test_rank_realism_hand_values_unit_range_and_monotone_in_the_logit():
    # per-image score = mean patch logit: (-4, -2) -> -3; (0, -2) -> -1; (-2, -2) -> -2; (-1, -1) -> -1
    fake = torch.tensor([[-4.0, -2.0], [0.0, -2.0], [-2.0, -2.0], [-1.0, -1.0]]).reshape(4, 1, 1, 2)
    # batch_rank: fraction of the 4 scores at or below each: -3 -> 1/4, -1 -> 4/4 (tie counts), -2 -> 2/4
    assert realism("batch_rank", fake).tolist() == [0.25, 1.0, 0.5, 1.0]
    # real_rank against real scores (-2.5, -1.5, 0.5, 2): -3 -> 0, -1 -> 2/4, -2 -> 1/4
    real = torch.tensor([-2.5, -1.5, 0.5, 2.0]).reshape(4, 1, 1, 1)
    assert realism("real_rank", fake, real).tolist() == [0.0, 0.5, 0.25, 0.5]
    assert realism("clipped_bce", fake).tolist() == clipped_bce_realism(fake).tolist()
    # a discriminator that has won (every fake far below every real): the absolute score and real_rank are 0 for
    # all, the batch rank still orders the fakes and gives the most realistic one full weight
    won = torch.tensor([-9.0, -6.0, -8.0]).reshape(3, 1, 1, 1)
    assert clipped_bce_realism(won).tolist() == [0.0] * 3
    assert realism("real_rank", won, real).tolist() == [0.0] * 3
    assert realism("batch_rank", won).tolist() == pytest.approx([1 / 3, 1.0, 2 / 3])
    # raising one image's logit (the others fixed) never lowers its realism; always in [0, 1]
    g = torch.Generator().manual_seed(0)
    for mode in ("batch_rank", "real_rank"):
        base = torch.randn(6, 1, 2, 2, generator=g)
        previous = None
        for z in torch.linspace(-5, 5, 41):
            logits = base.clone()
            logits[0] = z
            r = realism(mode, logits, real)
            assert 0 <= r.min() and r.max() <= 1
            assert previous is None or r[0] >= previous
            previous = r[0]
        assert previous == 1  # the highest logit of the batch (and above every real score) -> 1
    # percentile against an independent count
    s, ref = torch.randn(20, generator=g), torch.randn(7, generator=g)
    assert percentile(s, ref).tolist() == pytest.approx([sum(float(x) <= float(v) for x in ref) / 7 for v in s])


# ---- mask composition -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(24, 24), (12, 12, 12)])
def test_composed_masks_keep_valid_labels_and_the_pairing(shape):
    g = torch.Generator().manual_seed(1)
    labels = phantom_labels(4, shape, 5, generator=g)
    lut = torch.tensor([0.0, 0.1, 0.35, 0.6, 0.9])
    new, images = compose_masks(labels, g, flip=0.5, elastic_std=3.0, paste=1.0, images=lut[labels])
    assert new.shape == labels.shape and new.dtype == labels.dtype
    assert not torch.equal(new, labels)
    assert set(new.unique().tolist()) <= set(labels.unique().tolist())
    assert torch.equal(images, lut[new])  # every voxel of the image still shows its label's intensity


def test_a_certain_flip_without_deformation_mirrors_the_first_axis():
    labels = phantom_labels(3, (20, 16), 5, generator=torch.Generator().manual_seed(0))
    new, _ = compose_masks(labels, torch.Generator().manual_seed(0), flip=1.0, rotation=0.0, scaling=0.0,
                           elastic_std=0.0, paste=0.0)
    assert torch.equal(new, labels.flip(2))


def test_pasting_copies_one_structure_of_the_other_map():
    labels = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    labels[0, 0, 1:3, 1:3] = 1
    labels[1, 0, 5:8, 4:7] = 2
    new, _ = compose_masks(labels, torch.Generator().manual_seed(0), flip=0.0, rotation=0.0, scaling=0.0,
                           elastic_std=0.0, paste=1.0)
    expected = labels.clone()  # each map's only donor is the other, whose only structure is pasted
    expected[0, 0, 5:8, 4:7] = 2
    expected[1, 0, 1:3, 1:3] = 1
    assert torch.equal(new, expected)


# ---- the GAN ----------------------------------------------------------------------------------------------------

def test_gan_learns_a_constant_per_class_image():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    labels = phantom_labels(8, (16, 16), 4, generator=g)
    images = torch.tensor([0.0, 0.3, 0.6, 1.0])[labels]
    torch.manual_seed(0)
    gan = Pix2Pix(2, 4, 1, (8, 16), 1, 8, 1)
    trainer = Pix2PixTrainer(gan, lr=2e-3)
    l1 = [trainer.step(labels[s % 2 * 4:][:4], images[s % 2 * 4:][:4], g)["gan_l1"] for s in range(40)]
    best_constant = float((images - images.median()).abs().mean())  # L1 of the best label-blind image
    assert sum(l1[-4:]) / 4 < 0.6 * sum(l1[:4]) / 4 and sum(l1[-4:]) / 4 < best_constant


def test_generator_takes_any_size_in_2d_and_3d():
    for shape in [(15, 17), (9, 10, 11)]:
        gan = Pix2Pix(len(shape), 3, 1, (4, 8), 0, 4, 1)
        labels = torch.randint(3, (2, 1, *shape), generator=torch.Generator().manual_seed(0))
        image = gan.generate(labels, torch.Generator().manual_seed(0))
        assert image.shape == labels.shape and 0 < image.min() and image.max() < 1
        assert gan.scores(labels, image).shape == (2,)


# ---- the method in training -------------------------------------------------------------------------------------

@pytest.mark.parametrize("gate", ["true", "false"])
def test_train_cli_runs_the_gan_phase_then_the_weighted_segmenter_phase(tmp_path, capsys, gate):
    out = tmp_path / "run"
    sets = [x for s in [*TINY, "steps=8", f"gan.realism_weight={gate}"] for x in ("--set", s)]
    assert main(["train", "--config", str(CONFIG), "--out", str(out), "--quiet", *sets]) == 0
    assert "dice_mean" in capsys.readouterr().out
    log = [r for r in rows(out) if r.get("synth_weight") or r.get("gan_l1")]
    assert [int(r["step"]) for r in log] == list(range(1, 9))
    assert all(not r["loss_seg"] for r in log[:2])  # phase 1: GAN only
    for r in log[2:]:  # phase 2: segmenter steps 0..5, epochs of 2 steps: t = 0, 0, 1, 1, 2, 2
        t = (int(r["step"]) - 3) // 2
        weight = float(r["synth_weight"])
        if t == 0:
            assert weight == 0 and not r["realism"]  # no synthetic batch is made in the first epoch
            continue
        realism = float(r["realism"]) if gate == "true" else 1.0  # without the gate: alpha * log(t + 1) alone
        assert weight == pytest.approx(0.5 * math.log(t + 1) * realism, rel=1e-4)
    assert gate == "false" or any(float(r["realism"]) > 0 for r in log[4:])  # the gate was not trivially 0
    # batch_rank (the default) gives every image at least 1/B (B = 2): none is zeroed
    assert gate == "false" or all(float(r["realism_min"]) >= 0.5 for r in log[4:])
    init, _ = setup(tiny("steps=8"))
    after_gan, end = (load_checkpoint(out / f"step_{s:06d}.pt")["state"] for s in (2, 8))
    assert_same_state(after_gan["params"], init.state_dict()["params"])  # phase 1 leaves the segmenter alone
    assert not torch.equal(after_gan["gan_gan"]["generator.model.0.conv.unit0.conv.weight"],
                           init.state_dict()["gan_gan"]["generator.model.0.conv.unit0.conv.weight"])
    assert_same_state(end["gan_gan"], after_gan["gan_gan"])  # frozen in phase 2 (keep_training false)
    assert any(not torch.equal(end["params"][k], after_gan["params"][k]) for k in end["params"])


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    config = tiny("steps=6", "gan.epoch_steps=1", "gan.keep_training=true")
    full, cut = full_and_resumed(config, tmp_path)
    assert_same_state(full, cut)
    assert (tmp_path / "full" / "metrics.csv").read_text() == (tmp_path / "cut" / "metrics.csv").read_text()


def test_checkpoint_round_trip_restores_every_state_and_the_generator(tmp_path):
    from learn2synth.gan_cmd import load_gan

    config = tiny("steps=4")
    train(config, tmp_path, progress=False, tensorboard=False)
    saved = load_checkpoint(tmp_path / "step_000004.pt")
    method, _ = setup(config)
    assert restore(method, tmp_path / "step_000004.pt")[0] == 4
    assert_same_state(method.state_dict(), saved["state"])
    gan, _ = load_gan(str(tmp_path))
    labels = method.real.labels[0][None]
    a, b = (m.generate(labels, torch.Generator().manual_seed(3)) for m in (method.gan, gan))
    assert torch.equal(a, b)


# ---- the gan command --------------------------------------------------------------------------------------------

def test_gan_train_then_sample_then_continue_into_the_segmenter_phase(tmp_path, capsys):
    from learn2synth.io import write_image

    run, sets = tmp_path / "gan", [x for s in TINY for x in ("--set", s)]
    assert main(["gan", "train", "--config", str(CONFIG), "--out", str(run), "--quiet", *sets]) == 0
    assert "gan_l1" in capsys.readouterr().out and (run / "step_000002.pt").exists()
    pairs = tmp_path / "pairs"
    for sub in ("images", "labels"):
        (pairs / sub).mkdir(parents=True)
    labels = phantom_labels(2, (32, 32), 6, generator=torch.Generator().manual_seed(0))
    for i, y in enumerate(labels):
        write_image(pairs / "labels" / f"case{i}.nii.gz", y[0].int().numpy())
        write_image(pairs / "images" / f"case{i}.nii.gz", (y[0] / 5.0).float().numpy())
    assert main(["gan", "sample", "--model", str(run), "--labels", str(pairs), "--out", str(tmp_path / "s"),
                 "--n", "3"]) == 0
    written = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert written == ["gallery.png", *[f"image_{i:04d}.nii.gz" for i in range(3)],
                       *[f"label_{i:04d}.nii.gz" for i in range(3)]]
    assert main(["train", "--config", str(CONFIG), "--out", str(run), "--resume", "--quiet", *sets,
                 "--set", "steps=4"]) == 0
    assert float(rows(run)[-2]["loss_seg"]) > 0 and (run / "step_000004.pt").exists()


def test_gan_commands_refuse_bad_input_in_one_line(tmp_path, capsys):
    from learn2synth.io import write_image

    run, sets = tmp_path / "gan", [x for s in TINY for x in ("--set", s)]
    assert main(["gan", "train", "--config", str(CONFIG), "--out", str(run), "--quiet", *sets]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.nii.gz"
    write_image(bad, torch.full((16, 16), 9, dtype=torch.int32).numpy())  # class 9 of a 6-class model
    assert main(["gan", "sample", "--model", str(run), "--labels", str(bad), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.nii.gz" in err and "9" in err
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.tmp-*"))
    assert main(["gan", "train", "--config", str(CONFIG), "--out", str(tmp_path / "r0"), *sets,
                 "--set", "gan.pretrain_steps=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gan.pretrain_steps" in err and not (tmp_path / "r0").exists()
    assert main(["gan", "sample", "--model", str(tmp_path / "nothing"), "--labels", str(bad),
                 "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
