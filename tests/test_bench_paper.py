"""The paper benchmarks (benchmarks/paper_recovery.py, paper_crossnoise.py) run end to end on tiny settings,
report what their runs logged, reuse finished runs, resume interrupted ones, and test on noisy held-out phantoms
whose clean images do not depend on the hidden sigma."""

import json
import sys
from pathlib import Path

import pytest
import torch

from learn2synth.runlog import learned_estimate

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
try:
    import paper_crossnoise as crossnoise
    import paper_recovery as recovery
finally:
    sys.path.remove(str(BENCH))

# 4 steps of 32x32 with the hypergradient from step 2, every step logged: about a second per run on one thread
TINY = ["--quick", "--jobs", "1", "--set", "steps=4", "--set", "meta.warmup=1", "--set", "meta.meta_every=1",
        "--set", "log_every=1",
        "--set", "data.phantom_count=4", "--set", "data.phantom_real.train_count=2",
        "--set", "data.phantom_real.test_count=3", "--set", "batch_size=2", "--set", "real_batch_size=2"]
SETTINGS = ["sigma_0.10", "bias_1_0_0", "range"]


def tiny_args(work: Path, out: Path, *more: str) -> list[str]:
    return [*TINY, "--work", str(work), "--out", str(out), *more]


@pytest.fixture(scope="module")
def recovered(tmp_path_factory):
    """One tiny recovery run per setting (seed 0); returns (work folder, report path)."""
    root = tmp_path_factory.mktemp("paper")
    out = root / "recovery.md"
    assert recovery.main(tiny_args(root / "work", out, "--settings", *SETTINGS, "--seeds", "0")) == 0
    return root / "work", out


def test_quick_defaults_never_overwrite_the_full_results():
    args = recovery.parse_args(["--quick"])
    assert args.out.name == "paper_recovery_quick.md" and args.work.name == "l2s_paper_quick"
    assert recovery.parse_args([]).out.name == "paper_recovery.md"
    assert crossnoise.parse_args(["--quick"]).out.name == "paper_crossnoise_quick.md"


def test_every_setting_hides_its_truth_and_learns_its_parameters():
    for name, setting in recovery.SETTINGS.items():
        config = recovery.load_config(recovery.recovery_spec(name, 0, True, [], Path("/w")))
        real, aug = config.data.phantom_real, config.augmenter
        truth = setting.truth
        if name.startswith("range"):
            assert real.sigma_range == [0.025, 0.2] and real.bias == []
        else:
            assert real.sigma == truth["noise.sigma"]
            assert real.bias == [truth[k] or recovery.ZERO for k in recovery.BIAS_KEYS if k in truth]
        assert aug.bias_points == ([2, 4, 8] if "bias.low" in truth else [])
        assert aug.noise == ("range" if "noise.sigma_lo" in truth else "sigma")
        assert config.method == "learn2synth" and config.threads == 1 and config.seed == 0
        assert config.checkpoint_every == config.steps // 5


def test_recovery_report_rows_match_the_runs(recovered):
    work, out = recovered
    text, record = out.read_text(), json.loads(out.with_suffix(".json").read_text())
    for row in ["| sigma_0.10 | noise.sigma | 0.1 |", "| range | noise.sigma_lo | 0.025 |",
                "| range | noise.sigma_hi | 0.2 |", "| bias_1_0_0 | bias.low | 1 |", "| bias_1_0_0 | bias.high | 0 |"]:
        assert row in text, row
    assert "| 0.098 |" in text and "| 0.153 |" in text  # the paper's values beside ours
    assert "**Quick run**" in text and "--seeds 0" in text and "torch" in text
    assert out.with_suffix(".png").stat().st_size > 10_000 and f"]({out.stem}.png)" in text
    rows = {(r["setting"], r["parameter"]): r for r in record["rows"]}
    assert len(rows) == 2 + 4 + 1
    for (name, key), row in rows.items():
        learned = learned_estimate(work / name / "seed0" / "metrics.csv")[key]
        assert row["values"] == [learned] and row["mean"] == pytest.approx(learned)
        if row["truth"]:
            assert row["rel_error"] == pytest.approx((learned - row["truth"]) / row["truth"])
    assert rows[("sigma_0.10", "noise.sigma")]["mean"] != pytest.approx(0.3, abs=1e-6)  # the hypergradient moved it
    for run in record["runs"]:
        assert 0 < run["dice_mean"] < 1 and run["steps"] == 4 and run["resumed_from"] is None


def test_second_invocation_reuses_finished_runs(recovered, monkeypatch, capsys):
    work, out = recovered
    done = {p: p.stat().st_mtime_ns for p in work.glob("*/seed0/done.json")}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("learn2synth.train.train", no_training)
    again = out.with_name("again.md")
    assert recovery.main(tiny_args(work, again, "--settings", *SETTINGS, "--seeds", "0")) == 0
    assert capsys.readouterr().out.count("done earlier") == len(SETTINGS)
    assert "(0 trained by this invocation" in again.read_text()
    assert {p: p.stat().st_mtime_ns for p in work.glob("*/seed0/done.json")} == done


def test_a_folder_with_other_settings_is_refused(recovered):
    work, out = recovered
    with pytest.raises(SystemExit, match="other settings"):
        recovery.main(tiny_args(work, out.with_name("x.md"), "--settings", "sigma_0.10", "--seeds", "0",
                                "--set", "optim.lr=0.01"))


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    """A run stopped after 2 of 4 steps is continued, not restarted: the log rows of its first 2 steps (marked
    here) are kept, as train(resume=True) keeps the rows up to the checkpoint."""
    import csv

    from learn2synth.train import train

    args = tiny_args(tmp_path / "work", tmp_path / "r.md", "--settings", "sigma_0.05", "--seeds", "1")
    spec = recovery.recovery_spec("sigma_0.05", 1, True, recovery.parse_args(args).sets, tmp_path / "work")
    train(recovery.load_config(spec), spec.folder, progress=False, tensorboard=False, stop_at=2)
    log = Path(spec.folder) / "metrics.csv"
    rows = [{**r, "marker": "first call"} for r in csv.DictReader(log.open())]
    with log.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert recovery.main(args) == 0
    assert json.loads((Path(spec.folder) / "done.json").read_text())["resumed_from"] == "step_000002.pt"
    rows = list(csv.DictReader(log.open()))
    assert {int(r["step"]) for r in rows} == {1, 2, 3, 4}
    assert {int(r["step"]) for r in rows if r["marker"] == "first call"} == {1, 2}


def test_crossnoise_reuses_the_recovery_run_and_fills_the_matrix(recovered, capsys):
    work, _ = recovered
    out = work.parent / "cross.md"
    assert crossnoise.main(tiny_args(work, out)) == 0
    assert capsys.readouterr().out.count("done earlier") == 1  # sigma_0.10 seed 0 from the recovery fixture
    text, record = out.read_text(), json.loads(out.with_suffix(".json").read_text())
    matrix = record["matrix"]
    assert len(matrix) == 5 and all(list(row) == ["0.0", "0.05", "0.1", "0.15"] for row in matrix.values())
    assert all(0 < v < 1 for row in matrix.values() for v in row.values())
    for run in record["runs"][1:]:  # on its own noise level, a model's Dice is its run's final validation Dice
        sigma = str(recovery.SIGMAS[run["setting"]])
        assert matrix[crossnoise.row_name(run)][sigma] == pytest.approx(run["dice_mean"], abs=1e-6)
    assert "| synthseg (noise-free synthesis) |" in text and "| learn2synth @ sigma 0.15 (learned" in text
    assert out.with_suffix(".png").stat().st_size > 10_000


def _real_pools(sets: list[str], sigma: float) -> tuple:
    """(train, test) 'real' pools of phantom_real with hidden noise ``sigma``, as (images, labels) tensors."""
    from learn2synth.sources import phantom_real
    from learn2synth.synth import Synthesizer
    from learn2synth.train_config import load_train_config

    config = load_train_config(None, [*sets, *recovery.hidden_sigma(sigma)])
    pools = phantom_real(config, Synthesizer(config.synth))
    return tuple((torch.stack(p.images), torch.stack(p.labels)) for p in pools)


def test_clean_held_out_images_do_not_depend_on_the_hidden_sigma():
    """phantom_real draws the noise last: per seed, the same labels and clean images at every sigma, and the
    same unit noise scaled by sigma; another seed gives other phantoms. The cross-noise test pool is the second."""
    sets = [*recovery.base_sets(True), "data.phantom_count=4", "data.phantom_real.test_count=4", "seed=0"]
    clean = _real_pools(sets, 0.0)
    contrast = torch.tensor(recovery.demo.CONTRAST)
    units = []
    for sigma in (0.05, 0.10, 0.15):
        noisy = _real_pools(sets, sigma)
        for (x0, y0), (x, y) in zip(clean, noisy, strict=True):
            assert torch.equal(y, y0) and torch.equal(x0, contrast[y0.long()])
            assert ((x - x0) / sigma).std() == pytest.approx(1, abs=0.05)
        units.append(torch.cat([(x - x0) / sigma for (x0, _), (x, _) in zip(clean, noisy, strict=True)]))
        test_pool = crossnoise.held_out_pool(sets, sigma)
        assert torch.equal(torch.stack(test_pool.images), noisy[1][0])
    torch.testing.assert_close(units[1], units[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(units[2], units[0], atol=1e-4, rtol=0)
    other_seed = _real_pools([*sets, "seed=1"], 0.0)
    assert not torch.equal(other_seed[1][1], clean[1][1])


def test_parallel_jobs_run_in_subprocesses_with_the_same_results(tmp_path):
    """--jobs 2 trains in a fresh process (one torch thread, like in-process runs): same log, same summary."""
    sets = recovery.parse_args(TINY).sets
    specs = {jobs: recovery.recovery_spec("sigma_0", 0, True, sets, tmp_path / f"jobs{jobs}") for jobs in (1, 2)}
    summaries = {jobs: recovery.ensure_runs([spec], jobs)[0] for jobs, spec in specs.items()}
    assert summaries[2]["learned"] == summaries[1]["learned"] and summaries[2]["dice"] == summaries[1]["dice"]
    logs = [(Path(s.folder) / "metrics.csv").read_text() for s in specs.values()]
    assert logs[0] == logs[1]
