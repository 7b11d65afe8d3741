"""``learn2synth labelgen|spade train|sample``: exact resume, checkpoint round trip, outputs, bad inputs (exit 2)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from learn2synth.checkpoint import latest_checkpoint, load_checkpoint
from learn2synth.cli import main
from learn2synth.generative.checkpoints import load_generator
from learn2synth.generative_cmd import build_training, load_generator_config, train_generator

TINY = {"labelgen": ["shape=[16,16]", "n_classes=5", "batch_size=2", "ae_steps=3", "diffusion_steps=3",
                     "ae_channels=[4,8]", "unet_channels=[8,8]", "latent_channels=2", "train_timesteps=20",
                     "sample_steps=2", "checkpoint_every=2", "log_every=1", "adv_weight=0.1", "threads=1"],
        "spade": ["shape=[16,16]", "n_classes=5", "batch_size=2", "steps=6", "channels=[4,8]", "z_dim=4",
                  "spade_channels=4", "critic_channels=4", "checkpoint_every=2", "log_every=1", "threads=1"]}


def tensors(tree, prefix=""):
    """Every tensor of a nested state dict, by path."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list | tuple) else []
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


def fresh(kind):
    return build_training(kind, load_generator_config(kind, None, TINY[kind]))


@pytest.mark.parametrize("kind", ["labelgen", "spade"])
def test_cut_and_resumed_run_equals_an_uninterrupted_one_bit_for_bit(tmp_path, kind):
    train_generator(fresh(kind), tmp_path / "full", progress=False, gallery=False)
    train_generator(fresh(kind), tmp_path / "cut", progress=False, stop_at=3, gallery=False)  # labelgen: phase 2
    assert latest_checkpoint(tmp_path / "cut").name == "step_000003.pt"
    train_generator(fresh(kind), tmp_path / "cut", resume=True, progress=False, gallery=False)
    full, cut = (load_checkpoint(latest_checkpoint(tmp_path / n)) for n in ("full", "cut"))
    assert full["step"] == cut["step"] == 6
    a, b = tensors(full["state"]), tensors(cut["state"])
    assert a.keys() == b.keys() and any("opt" in k and "exp_avg" in k for k in a)  # optimizer moments compared
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = [line.rsplit(",", 1)[0] for line in (tmp_path / "full" / "metrics.csv").read_text().splitlines()]
    assert strip == [line.rsplit(",", 1)[0] for line in (tmp_path / "cut" / "metrics.csv").read_text().splitlines()]


def test_checkpoint_round_trip_gives_the_trained_generator(tmp_path):
    run = fresh("labelgen")
    train_generator(run, tmp_path, progress=False)
    loaded = load_generator(tmp_path, "labelgen")
    for (k, v), (k2, v2) in zip(run.model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    assert loaded.scale_factor != 1.0  # measured at the first diffusion step, and saved
    same = [m.sample(2, torch.Generator().manual_seed(5)) for m in (run.model, loaded)]
    assert torch.equal(*same)
    assert (tmp_path / "gallery.png").stat().st_size > 0


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sets(kind):
    return [x for s in TINY[kind] for x in ("--set", s)]


def test_train_and_sample_from_the_command_line(tmp_path, capsys):
    assert run_cli(capsys, "labelgen", "train", "--out", tmp_path / "lg", "--quiet", *sets("labelgen"))[0] == 0
    assert run_cli(capsys, "labelgen", "sample", "--model", tmp_path / "lg", "--n", 3, "--out", tmp_path / "maps",
                   "--seed", 1)[0] == 0
    maps = sorted((tmp_path / "maps").glob("label_*.nii.gz"))
    assert len(maps) == 3 and (tmp_path / "maps" / "gallery.png").exists()
    for m in maps:
        array = np.asarray(nib.load(m).dataobj)
        assert array.shape == (16, 16) and np.issubdtype(array.dtype, np.integer) and array.max() < 5
    assert run_cli(capsys, "spade", "train", "--out", tmp_path / "sp", "--quiet", *sets("spade"))[0] == 0
    style = tmp_path / "style.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 9)).astype(np.float32), np.eye(4)), style)
    code, out, err = run_cli(capsys, "spade", "sample", "--model", tmp_path / "sp", "--labels",
                             tmp_path / "maps" / "label_*.nii.gz", "--style", style, "--n", 4, "--out",
                             tmp_path / "img")
    assert code == 0, err
    images = sorted((tmp_path / "img").glob("image_*.nii.gz"))
    assert len(images) == 4
    x = np.asarray(nib.load(images[0]).dataobj)
    assert x.shape == (16, 16) and 0 <= x.min() and x.max() <= 1
    # one style: the rendering of a label map depends only on the map (map 0 is drawn again as sample 3)
    assert np.array_equal(x, np.asarray(nib.load(images[3]).dataobj))


def bad_cases(tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    nib.save(nib.Nifti1Image(np.full((16, 16), 7, dtype=np.int16), np.eye(4)), maps / "bad.nii.gz")
    return {
        "missing model": (["labelgen", "sample", "--model", tmp_path / "nope", "--out", tmp_path / "o"], "no such"),
        "wrong kind": (["spade", "sample", "--model", tmp_path / "lg", "--labels", maps, "--out", tmp_path / "o"],
                       "labelgen generator, not a spade"),
        "class too big": (["labelgen", "train", "--out", tmp_path / "t", "--set", f"labels={maps}",
                           *sets("labelgen")], "hold class 7"),
        "shape": (["spade", "train", "--out", tmp_path / "t", "--set", "shape=[20,20]"], "divide by"),
        "unknown key": (["labelgen", "train", "--out", tmp_path / "t", "--set", "ae_stepz=3"], "ae_stepz"),
        "changed resume": (["labelgen", "train", "--out", tmp_path / "lg", "--resume", *sets("labelgen"),
                            "--set", "kl_weight=1"], "other settings"),
    }


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys):
    train_generator(fresh("labelgen"), tmp_path / "lg", progress=False, gallery=False)
    for name, (argv, message) in bad_cases(tmp_path).items():
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, name
        assert err.count("\n") == 1 and message in err, (name, err)
        assert not (tmp_path / "o").exists() and not (tmp_path / "t").exists(), name
    assert not any(Path(tmp_path).glob(".o.tmp-*"))
