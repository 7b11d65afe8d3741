"""The README's worked example for a user's own data runs as written, on a tiny generated DRIVE-like dataset:
RGB TIFF photographs (LZW), 0/255 GIF masks, file names that pair by ID token, sizes not divisible by the
network's stride, method real with two classes."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learn2synth.cli import main

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Your own data, from folders to a metrics table")[1].split("```bash")[1].split("```")[0]
    lines = block.replace("\\\n", " ").strip().splitlines()
    return [shlex.split(line) for line in lines]


def _vessels(rng, shape=(45, 37)):
    mask = np.zeros(shape, np.uint8)
    for _ in range(3):
        row = rng.integers(5, shape[0] - 5)
        mask[row - 1:row + 2, :] = 255
    rgb = rng.integers(0, 40, (*shape, 3)).astype(np.uint8)
    rgb[..., 1] = np.where(mask > 0, 30, 200) + rng.integers(0, 20, shape)  # vessels dark in the green channel
    return rgb, mask


def make_dataset(root: Path, rng) -> None:
    for part, ids in (("train", range(21, 25)), ("test", range(1, 3))):
        (root / part / "images").mkdir(parents=True)
        (root / part / "labels").mkdir(parents=True)
        for i in ids:
            rgb, mask = _vessels(rng)
            name = f"{i:02d}_training" if part == "train" else f"{i:02d}_test"
            Image.fromarray(rgb).save(root / part / "images" / f"{name}.tif", compression="tiff_lzw")
            label_name = f"{i:02d}_manual1.gif" if part == "train" else f"{name}.gif"
            Image.fromarray(mask).save(root / part / "labels" / label_name)


@pytest.mark.slow
def test_readme_own_data_example_runs_as_written(tmp_path, monkeypatch, capsys):
    commands = readme_commands()
    assert [c[:2] for c in commands] == [["learn2synth", "train"], ["learn2synth", "predict"],
                                         ["learn2synth", "evaluate"], ["cat", "scores/summary.md"]]
    make_dataset(tmp_path / "my_data", np.random.default_rng(0))
    monkeypatch.chdir(tmp_path)
    train = [re.sub(r"^steps=\d+$", "steps=4", a) for a in commands[0][1:]]
    train = [re.sub(r"^data.shape=.*$", "data.shape=[32,32]", a) for a in train]
    small = ["--set", "net.channels=[4,8,16]", "--set", "batch_size=2", "--set", "real_batch_size=2",
             "--set", "val_every=2", "--set", "threads=1", "--set", "data.val_fraction=0.25", "--quiet"]
    assert main(train + small) == 0
    assert main(commands[1][1:] + ["--quiet"]) == 0
    pred = np.asarray(Image.open(tmp_path / "predictions" / "01_test.tif"))  # the input's name and format
    assert pred.shape == (45, 37) and set(np.unique(pred)) <= {0, 1}
    assert main(commands[2][1:] + ["--quiet", "--no-distances"]) == 0
    summary = (tmp_path / "scores" / "summary.md").read_text()
    assert "| 1 " in summary and "dice" in summary  # the vessel class (mask value 255 read as 1) is scored
    metrics = (tmp_path / "runs" / "vessels" / "metrics.csv").read_text()
    assert "val_dice_mean" in metrics  # validation on whole 45x37 images ran (padded to the stride)
