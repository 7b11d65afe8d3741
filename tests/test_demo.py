"""The demo's quick mode end to end (its accuracy goals are checked by the full run, recorded in the notes)."""

import json

from learn2synth.cli import main


def test_quick_demo_writes_results_report_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
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
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    assert main(["demo", "--quick", "--out", str(other)]) == 2
    assert (other / "precious.txt").read_text() == "keep"
