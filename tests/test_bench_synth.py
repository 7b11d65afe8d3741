"""The throughput benchmark runs end to end on a tiny problem and reports what it promises (no timing claims)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "synth_throughput.py"
TINY = {"2d": ((32, 32), 2), "3d": ((16, 16, 16), 1)}


def load_bench():
    spec = importlib.util.spec_from_file_location("synth_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_bench()


@pytest.fixture(scope="module")
def result(bench):
    # per_image_limit=1: the one-image-per-call libraries time 1 of the 2 label maps in 2D (the --quick path)
    return bench.run_benchmark(cases=TINY, reps=1, warmup=1, warmup_crop=8, per_image_limit=1)


def installed(name):
    return importlib.util.find_spec(name) is not None


def positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.mark.parametrize("case", ["2d", "3d"])
def test_our_contenders_report_positive_throughput(result, case):
    assert positive(result[f"ips_ours_synthseg_{case}"])
    assert positive(result[f"ips_ours_matched_{case}"])
    assert len(result["cases"][case]["times"]["ours_synthseg"]) == 1  # one timed batch per repetition


@pytest.mark.parametrize("lib", ["cornucopia", "torchio"])
@pytest.mark.parametrize("case", ["2d", "3d"])
def test_ratios_against_each_library_or_a_reported_skip(result, lib, case):
    keys = (f"ips_{lib}_{case}", f"ratio_vs_{lib}_{case}", f"ratio_matched_vs_{lib}_{case}")
    assert all(key in result for key in keys)  # the keys exist either way, for --json consumers
    if not installed(lib):
        assert all(result[key] is None for key in keys) and lib in result["missing"]
        pytest.skip(f"{lib} not installed")
    assert all(positive(result[key]) for key in keys)
    ratio = result[f"ips_ours_synthseg_{case}"] / result[f"ips_{lib}_{case}"]
    assert result[f"ratio_vs_{lib}_{case}"] == pytest.approx(ratio)
    info = result["cases"][case]
    assert info["images_timed"][lib] == 1 and info["images_timed"]["ours_synthseg"] == info["batch"]
    # images/s counts the images actually rendered: one per timed call here
    assert result[f"ips_{lib}_{case}"] == pytest.approx(1 / info["times"][lib][0])


def test_report_has_a_row_per_contender_and_keeps_hand_written_notes(bench, result, tmp_path):
    report = bench.format_report(result, "python benchmarks/synth_throughput.py --test", (0.0, 0.0))
    rows = [line for line in report.splitlines() if line.startswith("| 2d") or line.startswith("| 3d")]
    assert len(rows) == 2 * len(bench.CONTENDERS)
    assert "torch" in report and "--test" in report
    path = tmp_path / "results.md"
    bench.write_report(report, path)
    path.write_text(path.read_text() + "\nhand-written note\n")
    bench.write_report(report, path)  # regenerating keeps what sits below the marker
    assert path.read_text().count("hand-written note") == 1 and path.read_text().count(bench.KEEP) == 1


def test_json_output_is_one_object_with_the_ratio_keys(bench, result, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run_benchmark", lambda **kwargs: result)  # the tiny run above, not a full one
    assert bench.main(["--json", "--no-write"]) == 0
    data = json.loads(capsys.readouterr().out)
    for case in TINY:
        assert positive(data[f"ips_ours_synthseg_{case}"])
        for lib in ("cornucopia", "torchio"):
            assert f"ratio_vs_{lib}_{case}" in data
