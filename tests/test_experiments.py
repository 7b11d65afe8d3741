"""Smoke test of the real-data experiment scripts (benchmarks/experiments): one --quick run with tiny steps.

Skipped when ../shared/data is absent. The full runs and their results are in benchmarks/results/exp_*.md.
"""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
ISBI = DATA / "em" / "isbi2012"

pytestmark = pytest.mark.skipif(not ISBI.is_dir(), reason="../shared/data (ISBI 2012) not present")


def experiment_modules(*names):
    """The scripts of benchmarks/experiments, imported by name (their folder is not a package)."""
    import importlib

    sys.path.insert(0, str(REPO / "benchmarks" / "experiments"))
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.pop(0)


def test_isbi_quick_runs_every_method_and_writes_report(tmp_path):
    common, exp_isbi = experiment_modules("common", "exp_isbi")
    out = tmp_path / "exp_isbi.md"
    # --downsample 2: trained on block-reduced slices, test slices predicted reduced and scored at full size
    code = exp_isbi.main(["--data", str(DATA), "--quick", "--set", "steps=2", "--test-crop", "64",
                          "--downsample", "2", "--out", str(out), "--work", str(tmp_path / "work")])
    assert code == 0
    text = out.read_text()
    for method in common.METHODS:
        assert f"| {method} |" in text
    assert "Wilcoxon" in text and "--quick" in text and "reduced 2x" in text
    assert len(list((tmp_path / "work" / "reduced2").glob("*.npz"))) == 2 * 3  # 3 training slices
    assert out.with_suffix(".png").stat().st_size > 0
    assert (tmp_path / "work" / "results.json").exists()



@pytest.mark.skipif(not (DATA / "brain" / "oasis").is_dir(), reason="../shared/data (OASIS) not present")
def test_brain_quick_runs_both_directions_with_volume_dice(tmp_path):
    exp_brain, = experiment_modules("exp_brain")
    out = tmp_path / "exp_brain.md"
    code = exp_brain.main(["--data", str(DATA), "--quick", "--k", "1", "--methods", "synthseg,real", "--set",
                           "steps=2", "--maps", "1", "--out", str(out), "--work", str(tmp_path / "work")])
    assert code == 0
    text = out.read_text()
    # one section per direction, each with the volume-Dice headline over the other subject's slices
    assert "## Trained with slices of 0001, tested on 0002" in text
    assert "## Trained with slices of 0002, tested on 0001" in text
    assert "| K=1 0001->0002 | real | OAS1_0002 |" in text and "| K=1 0002->0001 | real | OAS1_0001 |" in text
    # the synthesis keeps the non-brain labels (random skull stripping), unless --strip-non-brain
    assert "skull-stripped at a random margin" in text
    with pytest.raises(SystemExit) as bad:  # a subject tested on itself, or an unknown one: usage error
        exp_brain.main(["--data", str(DATA), "--directions", "0001:0001", "--out", str(out)])
    assert bad.value.code == 2


def test_summary_table_spreads_over_seeds_hand_worked():
    """Runs without volumes contribute their mean Dice over cases (one value per seed); with volumes, each volume's
    Dice. Hand-worked: synthseg seeds 0.5 and 0.7 -> 0.600 ± 0.100; other 0.8 and 0.8 -> +20.0 points."""
    common, = experiment_modules("common")

    def run(method, dices, volumes=None):
        r = common.Result(method, "", 0.0, per_case={"t": [{"dice": d} for d in dices]})
        if volumes:
            r.per_volume["t"] = [{"dice": d} for d in volumes]
        return r

    table = common.summary_table([run("synthseg", [0.4, 0.6]), run("synthseg", [0.7, 0.7]),
                                  run("other", [0.8]), run("other", [0.9, 0.7])], "t")
    assert "| synthseg | 2 | 0.600 ± 0.100 | 0.500 - 0.700 | +0.0 |" in table
    assert "| other | 2 | 0.800 ± 0.000 | 0.800 - 0.800 | +20.0 |" in table and "mean over cases" in table
    table = common.summary_table([run("synthseg", [0.0], volumes=[0.5, 0.6])], "t")
    assert "| synthseg | 2 | 0.550 ± 0.050 |" in table and "volume Dice" in table


@pytest.mark.skipif(not (DATA / "brain" / "oasis").is_dir(), reason="../shared/data (OASIS) not present")
def test_gan_experiment_quick_runs_on_exp_brains_data_preparation(tmp_path):
    """exp_gan.py builds on exp_brain's helpers (a refactor of exp_brain once broke it unnoticed)."""
    exp_gan, = experiment_modules("exp_gan")
    out = tmp_path / "gan.md"
    assert exp_gan.main(["--k", "2", "--maps", "1", "--every", "32", "--test-every", "32", "--methods", "synthseg",
                         "gan_synth", "--set", "steps=3", "--set", "gan.pretrain_steps=2", "--set",
                         "gan.epoch_steps=1", "--set", "data.shape=[64,64]", "--data", str(DATA), "--out",
                         str(out)]) == 0
    text = out.read_text()
    assert "| synthseg |" in text and "| gan_synth |" in text and "configs/experiments/brain.yaml" in text


@pytest.mark.skipif(not (DATA / "brain" / "synthseg_label_maps").is_dir(),
                    reason="../shared/data (OASIS, SynthSeg label maps) not present")
def test_adapt_experiment_skull_on_uses_the_raw_slice_and_its_labels(tmp_path, capsys):
    """The skull-on domain is each subject's raw slice_orig with slice_seg4, which is coronal slice 109 of the
    aligned labels (checked against the volume); K must be 1; a quick run reports it."""
    import nibabel as nib
    import numpy as np

    exp_adapt, = experiment_modules("exp_adapt")
    image, seg = exp_adapt.domain(DATA, "0002", exp_adapt.SKULL_ON)
    folder = DATA / "brain" / "oasis" / exp_adapt.SUBJECTS["0002"]
    aligned = np.asarray(nib.load(folder / "aligned_seg4.nii.gz").dataobj)
    assert image.shape == seg.shape == (160, 192, 1) and np.array_equal(seg[:, :, 0], aligned[:, :, 109])
    assert (image[seg == 0] > 0).mean() > 0.9  # the skull and scalp are there: not a skull-stripped image
    out = tmp_path / "adapt.md"
    assert exp_adapt.main(["--data", str(DATA), "--contrast", "skull-on", "--k", "1", "--quick", "--methods",
                           "start,synthseg", "--threads", "1", "--set", "augmenter.check_every=0", "--set",
                           "data.val_fraction=0", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    text = out.read_text()
    assert "`slice_orig`" in text and "| seed=0 | start | OAS1_0002 |" in text and "| seed=0 | synthseg |" in text
    assert "skull-stripped (`slice_norm`): volume Dice 0." in text  # what the skull costs, before adaptation
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad:  # a usage error: one line, exit code 2, the report left as it was
        exp_adapt.main(["--data", str(DATA), "--contrast", "skull-on", "--k", "5", "--out", str(out)])
    assert bad.value.code == 2 and "use --k 1" in capsys.readouterr().err and out.read_text() == text
