"""metrics.csv reading: series and the tail-averaged learned values, against hand-computed means."""

import pytest

from learn2synth.runlog import learned_estimate, mark_learned, not_identified, series


def write(tmp_path, rows):
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss_synth,noise.sigma,val_dice_mean\n" + "\n".join(rows) + "\n")
    return path


def test_learned_estimate_averages_the_last_fraction_of_logged_steps(tmp_path):
    rows = [f"{10 * i},0.5,{0.01 * i}," for i in range(1, 11)] + ["100,,,0.7"]  # a validation-only row
    path = write(tmp_path, rows)
    assert learned_estimate(path, tail=0.2)["noise.sigma"] == pytest.approx((0.09 + 0.10) / 2)
    assert learned_estimate(path, tail=0.5)["noise.sigma"] == pytest.approx(sum(0.01 * i for i in range(6, 11)) / 5)
    assert learned_estimate(path, tail=0)["noise.sigma"] == pytest.approx(0.10)
    assert learned_estimate(tmp_path / "missing.csv") == {}


def test_series_skips_rows_without_the_key(tmp_path):
    path = write(tmp_path, ["10,0.5,0.01,", "20,,,0.7", "30,0.4,0.02,"])
    assert series(path, ["noise.sigma", "val_dice_mean"]) == {"noise.sigma": [(10, 0.01), (30, 0.02)],
                                                              "val_dice_mean": [(20, 0.7)]}


def test_the_two_point_bias_exponent_is_marked_not_identified():
    """With instance norm the 2-point bias field is ~ a global scale the network removes: reports must mark it."""
    marked = not_identified()  # defaults: bias points 2/4/8, instance norm
    assert list(marked) == ["bias.low"] and "instance norm" in marked["bias.low"]
    assert mark_learned("bias.low", 0.109, marked) == "0.109 (not identified)"
    assert mark_learned("bias.middle", 0.623, marked) == "0.623"
    assert not_identified([4, 8]) == {}  # no 2-point field
    assert not_identified([2, 4, 8], norm="none") == {}  # the scale then reaches the network
    assert list(not_identified([2, 8])) == ["bias.2"]  # named by points when there are not three scales
