"""Training stumbles a new user hit: label spaces, defaults that follow the method, work never lost."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from learn2synth.checkpoint import latest_checkpoint, load_checkpoint
from learn2synth.cli import main
from learn2synth.methods.base import Method
from learn2synth.train import setup, train
from learn2synth.train_config import load_train_config

TINY = ["net.channels=[4,8]", "threads=1", "batch_size=1", "real_batch_size=1", "data.shape=[16,16]"]


def _pair(folder: Path, labels: np.ndarray, name: str) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(0).random(labels.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "images" / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(labels.astype(np.int16), np.eye(4)), folder / "labels" / f"{name}.nii.gz")


def test_synthesis_mapping_is_not_applied_to_real_labels(tmp_path):
    """Real labels already in classes 0..4 stay as they are, though the synthesis maps go through a mapping
    that would scramble them (0..4 -> 0, 0, 3, 1, 4 through the SynthSeg-to-tissue mapping)."""
    seg = np.zeros((16, 16, 2), np.int16)
    for c in range(5):
        seg[3 * c:3 * c + 3] = c
    for s in ("a", "b"):
        _pair(tmp_path / "real", seg, s)
    (tmp_path / "maps").mkdir()
    nib.save(nib.Nifti1Image(np.full((16, 16, 2), 2, np.int16), np.eye(4)), tmp_path / "maps" / "m.nii.gz")
    root = Path(__file__).resolve().parents[1]
    config = load_train_config(None, [*TINY, "method=mixed", "data.n_classes=5", f"data.labels={tmp_path / 'maps'}",
                                      f"data.real={tmp_path / 'real'}", "data.val_fraction=0",
                                      f"data.label_mapping={root / 'configs/mappings/synthseg_to_tissue4.yaml'}"])
    run, _ = setup(config)
    assert sorted(int(v) for v in np.unique(run.real.labels[0].numpy())) == [0, 1, 2, 3, 4]
    assert run.synth.config.labels.segmentation_labels == [0, 3]  # label 2 (left WM) -> WM, for the synthesis


def test_real_labels_outside_the_classes_are_refused_naming_the_values(tmp_path, capsys):
    seg = np.zeros((16, 16, 2), np.int16)
    seg[4:8] = 7
    _pair(tmp_path / "real", seg, "a")
    sets = [*TINY, "method=real", f"data.real={tmp_path / 'real'}", "data.n_classes=3"]
    code = main(["train", "--out", str(tmp_path / "run"), "--quiet", *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 2 and "label values [7] are outside the 3 classes" in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "run").glob("step_*.pt"))


def test_method_real_needs_no_label_maps_and_allows_two_classes(tmp_path):
    config = load_train_config(None, ["method=real", "data.n_classes=2", "data.real=my_data"])
    assert config.data.labels is None  # not the phantom default, which needs at least 4 classes
    with pytest.raises(Exception, match="needs label maps"):
        load_train_config(None, ["method=synthseg", "data.labels=null"])


def test_a_checkpoint_is_written_by_wall_time_and_before_validation(tmp_path, monkeypatch):
    """checkpoint_every far away, checkpoint_minutes ~0: every log step checkpoints; a validation that fails
    at the last step leaves the final weights on disk."""
    config = load_train_config(None, [*TINY, "method=synthseg", "steps=6", "data.n_classes=4", "data.phantom_count=2",
                                      "checkpoint_every=100000", "checkpoint_minutes=1e-9", "log_every=2",
                                      "val_every=6", "keep_checkpoints=10"])

    def failing_validation(method, pool):
        raise RuntimeError("validation broke")

    monkeypatch.setattr(Method, "evaluate", failing_validation)
    with pytest.raises(RuntimeError, match="validation broke"):
        train(config, tmp_path / "run", progress=False, tensorboard=False)
    steps = sorted(load_checkpoint(p)["step"] for p in (tmp_path / "run").glob("step_*.pt"))
    assert steps == [2, 4, 6]
    assert latest_checkpoint(tmp_path / "run").name == "step_000006.pt"
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[-1].startswith("6,")  # metrics up to the last log step are on disk
