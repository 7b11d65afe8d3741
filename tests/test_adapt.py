"""learn2synth adapt: continue a tiny model with learn2synth on a tiny real dataset; bad inputs in one line."""

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from learn2synth.adapt import adapt_config
from learn2synth.checkpoint import load_checkpoint
from learn2synth.cli import main
from learn2synth.synth import phantom_labels

MODEL_SETS = ["method=synthseg", "steps=2", "net.channels=[4,8]", "data.shape=[16,16]", "data.n_classes=4",
              "threads=1", "data.phantom_count=4", "data.phantom_real.train_count=2",
              "data.phantom_real.test_count=2", "batch_size=2", "checkpoint_every=2"]
ADAPT_SETS = ["steps=3", "threads=1", "batch_size=2", "real_batch_size=2", "augmenter.check_every=2",
              "log_every=1", "val_every=3"]


def sets(values):
    return [a for s in values for a in ("--set", s)]


def nifti(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)


def real_folder(folder, n=4, top=None):
    """n subjects of 16x16x2 phantom volumes: images a fixed intensity per label plus noise."""
    g = torch.Generator().manual_seed(1)
    for i in range(n):
        label = phantom_labels(2, (16, 16), 4, generator=g)[:, 0].permute(1, 2, 0).numpy().astype(np.int16)
        if top is not None and i == 0:
            label[0, 0, 0] = top
        image = label * 0.3 + np.random.default_rng(i).normal(0, 0.05, label.shape)
        nifti(folder / "images" / f"s{i}.nii.gz", image.astype(np.float32))
        nifti(folder / "labels" / f"s{i}.nii.gz", label)
    return folder


def train_model(out, *extra):
    assert main(["train", "--quiet", "--out", str(out), *sets([*MODEL_SETS, *extra])]) == 0
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return train_model(tmp_path_factory.mktemp("model") / "run")


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return real_folder(tmp_path_factory.mktemp("real"))


def test_adapt_continues_the_model_with_learn2synth_and_its_settings(model, real, tmp_path, capsys):
    out = tmp_path / "adapted"
    assert main(["adapt", "--quiet", "--model", str(model), "--real", str(real), "--out", str(out),
                 *sets(ADAPT_SETS)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("adapt: ") and " s in all, " in last and " s of them training steps" in last
    source = load_checkpoint(sorted(model.glob("step_*.pt"))[-1])
    adapted = load_checkpoint(sorted(out.glob("step_*.pt"))[-1])
    config = adapted["config"]
    assert config["method"] == "learn2synth" and config["meta"]["debias"] is True
    assert config["augmenter"]["kind"] == "learned_priors" and config["data"]["real"] == str(real)
    assert config["synth"] == source["config"]["synth"] and config["net"] == source["config"]["net"]
    assert config["init_from"].endswith("step_000002.pt")
    assert "guard" in adapted["state"] and "gmm.mean.1.lo" in (out / "metrics.csv").read_text()
    # it started from the model: step 0 of a fresh init would differ much more than 3 small steps do
    start, end = source["state"]["params"], adapted["state"]["params"]
    assert all(start[k].shape == end[k].shape for k in start)
    assert main(["predict", "--quiet", "--model", str(out), "--in", str(real / "images"),
                 "--out", str(tmp_path / "pred")]) == 0
    assert len(list((tmp_path / "pred").iterdir())) == 4
    # resume of a finished adapt run is accepted and reports its final validation
    assert main(["adapt", "--quiet", "--model", str(model), "--real", str(real), "--out", str(out), "--resume",
                 *sets(ADAPT_SETS)]) == 0
    assert main(["adapt", "--quiet", "--model", str(model), "--real", str(real), "--out", str(out),
                 *sets(ADAPT_SETS)]) == 2  # no overwrite without --resume


def test_the_adapted_run_starts_from_the_model_weights(model, real):
    from learn2synth.train import setup

    run, val = setup(adapt_config(model, real, sets=ADAPT_SETS))
    stored = load_checkpoint(sorted(model.glob("step_*.pt"))[-1])["state"]["params"]
    assert all(torch.equal(run.params[k].detach(), v) for k, v in stored.items())
    assert val is not None and len(val) > 0  # real subjects held out for the check


def bad(capsys, *argv):
    code = main(["adapt", "--quiet", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_inputs_are_one_line(model, real, tmp_path, capsys, monkeypatch):
    out = ["--out", str(tmp_path / "o")]
    wrong = real_folder(tmp_path / "wrong", top=7)
    assert "label values [7]" in bad(capsys, "--model", str(model), "--real", str(wrong), *out, *sets(ADAPT_SETS))
    err = bad(capsys, "--model", str(model), "--real", str(real), *out, "--set", "data.n_classes=5")
    assert "class count 4 in the checkpoint, 5 in this config" in err and str(model) in err
    assert "no such file or folder" in bad(capsys, "--model", str(model), "--real", str(tmp_path / "none"), *out)
    assert "no such file" in bad(capsys, "--model", str(tmp_path / "nomodel.pt"), "--real", str(real), *out)
    one = real_folder(tmp_path / "one", n=1)
    assert "holds one subject" in bad(capsys, "--model", str(model), "--real", str(one), *out)
    import learn2synth.segment

    monkeypatch.setitem(learn2synth.segment.SHIPPED_VIEWS, "coronal", "missing.pt")
    assert "shipped brain model is missing" in bad(capsys, "--real", str(real), *out)
    monkeypatch.setitem(learn2synth.segment.SHIPPED_VIEWS, "axial", "missing_axial.pt")
    err = bad(capsys, "--view", "axial", "--real", str(real), *out)
    assert "missing_axial.pt" in err and "shipped brain model is missing" in err


def test_a_model_whose_label_maps_are_gone_names_them_and_the_fix(real, tmp_path, capsys):
    maps = tmp_path / "maps"
    g = torch.Generator().manual_seed(2)
    for i, m in enumerate(phantom_labels(2, (16, 16), 4, generator=g)):
        nifti(maps / f"m{i}.nii.gz", m[0].numpy().astype(np.int16)[..., None])
    model = train_model(tmp_path / "model", f"data.labels={maps}", "data.real=null")
    shutil.rmtree(maps)
    capsys.readouterr()  # the model's training output
    err = bad(capsys, "--model", str(model), "--real", str(real), "--out", str(tmp_path / "o"))
    assert str(maps) in err and "--set data.labels=PATH" in err
    # a --real that does not exist is named first: it is the user's own mistake, the model's maps come after
    err = bad(capsys, "--model", str(model), "--real", str(tmp_path / "nothere"), "--out", str(tmp_path / "o"))
    assert "nothere" in err and "real labeled examples" in err and "data.labels" not in err
    assert main(["adapt", "--quiet", "--model", str(model), "--real", str(real), "--out", str(tmp_path / "o"),
                 *sets([*ADAPT_SETS, "data.labels=phantom"])]) == 0


def test_view_picks_the_shipped_model_to_start_from(model, real, tmp_path, capsys, monkeypatch):
    """--view axial starts from the shipped axial model (here a tiny stand-in); --view and --model exclude each
    other."""
    import learn2synth.segment

    asked = []

    def stand_in(view="coronal"):
        asked.append(view)
        return sorted(model.glob("step_*.pt"))[-1]

    monkeypatch.setattr(learn2synth.segment, "shipped_model_path", stand_in)
    out = tmp_path / "axial"
    assert main(["adapt", "--quiet", "--view", "axial", "--real", str(real), "--out", str(out),
                 *sets(ADAPT_SETS)]) == 0
    assert asked == ["axial"]
    assert load_checkpoint(sorted(out.glob("step_*.pt"))[-1])["config"]["init_from"] == str(stand_in())
    with pytest.raises(SystemExit) as e:
        main(["adapt", "--view", "axial", "--model", str(model), "--real", str(real), "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["adapt", "--view", "oblique", "--real", str(real), "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "invalid choice: 'oblique'" in capsys.readouterr().err
