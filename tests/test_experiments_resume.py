"""The experiment scripts' runs continue where they stopped: a finished run is reused, an interrupted one resumes."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "experiments"))

import common  # noqa: E402

from learn2synth.train import train  # noqa: E402
from learn2synth.train_config import load_train_config  # noqa: E402

TINY = ["steps=4", "net.channels=[4,8]", "threads=1", "data.shape=[32,32]", "data.phantom_count=4",
        "data.phantom_real.train_count=2", "data.phantom_real.test_count=2", "batch_size=2", "checkpoint_every=2",
        "method=synthseg", "log_every=1"]


def test_finished_run_is_reused_and_interrupted_run_resumes(tmp_path):
    config = load_train_config(None, TINY)
    train(config, tmp_path / "cut", progress=False, tensorboard=False, stop_at=2)
    log = tmp_path / "cut" / "metrics.csv"
    header, first, *rest = log.read_text().splitlines()
    marked = first.split(",")
    marked[1] = "123"  # a marker in a row logged before the interruption: kept on resume, lost on a restart
    log.write_text("\n".join([header, ",".join(marked), *rest]) + "\n")
    seconds = common._train_once(config, tmp_path / "cut", progress=False)
    assert json.loads((tmp_path / "cut" / "train_seconds.json").read_text())["seconds"] == seconds
    assert (tmp_path / "cut" / "step_000004.pt").exists()
    assert log.read_text().splitlines()[1].split(",")[:2] == marked[:2]
    before = (tmp_path / "cut" / "step_000004.pt").stat().st_mtime_ns
    assert common._train_once(config, tmp_path / "cut", progress=False) == seconds
    assert (tmp_path / "cut" / "step_000004.pt").stat().st_mtime_ns == before  # not trained again
