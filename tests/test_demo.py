"""The demo's quick mode end to end (its accuracy goals are checked by the full run, recorded in the notes)."""

import json

import pytest

from learn2synth.cli import main


def test_quick_demo_writes_results_report_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--seeds", "1", "--jobs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "noise sigma" in printed and "Dice" in printed
    results = json.loads((out / "results.json").read_text())
    for key in ("true_sigma", "learned_sigma", "true_bias_exponents", "learned_bias_exponents", "dice_learn2synth",
                "dice_synthseg", "seconds"):
        assert key in results
    assert results["true_sigma"] == 0.1 and 0 < results["learned_sigma"] < 1
    assert 0 <= results["dice_learn2synth"] <= 1 and 0 <= results["dice_synthseg"] <= 1
    for name in ("report.md", "learned_parameters.png", "losses.png", "gallery.png"):
        assert (out / name).stat().st_size > 0
    # running again replaces the earlier demo output, but never a folder that is not one
    assert main(["demo", "--quick", "--seeds", "1", "--jobs", "1", "--out", str(out)]) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    assert main(["demo", "--quick", "--out", str(other)]) == 2
    assert (other / "precious.txt").read_text() == "keep"
    assert main(["demo", "--quick", "--seeds", "0", "--out", str(tmp_path / "none")]) == 2


def test_seeds_in_worker_processes_give_their_spread(tmp_path, capsys):
    """Two seeds in two spawned processes: the table's spread and the record's means come from the per-seed
    values (hand-checked here from results.json), and seed 1's runs are the ones a --seed 1 run makes."""
    import statistics

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--seeds", "2", "--jobs", "2", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1] and [r["seed"] for r in results["per_seed"]] == [0, 1]
    sigmas = [r["noise.sigma"] for r in results["per_seed"]]
    assert results["learned_sigma"] == statistics.fmean(sigmas) and sigmas[0] != sigmas[1]
    assert results["dice_synthseg"] == statistics.fmean(r["dice_synthseg"] for r in results["per_seed"])
    printed = capsys.readouterr().out
    assert f"{statistics.fmean(sigmas):.4g} ± {statistics.pstdev(sigmas):.2g}" in printed
    assert "[4/4]" in printed and (out / "runs" / "learn2synth_seed1" / "metrics.csv").exists()
    one = tmp_path / "one"
    assert main(["demo", "--quick", "--seed", "1", "--seeds", "1", "--jobs", "1", "--out", str(one)]) == 0
    # the same run in this process (its thread count may differ from the worker's: equal up to rounding)
    assert json.loads((one / "results.json").read_text())["per_seed"][0]["noise.sigma"] == pytest.approx(sigmas[1],
                                                                                                        rel=1e-3)
