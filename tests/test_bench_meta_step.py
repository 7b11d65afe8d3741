"""The meta-step benchmark runs end to end on a toy problem and reports what it promises (no timing claims)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "meta_step.py"
TINY = {"2d": ((16, 16), 2), "3d": ((8, 8, 8), 1)}
TINY_SCALING = {"2d": ([(8, 8), (16, 16)], 2)}


def load_bench():
    spec = importlib.util.spec_from_file_location("meta_step_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_bench()


@pytest.fixture(scope="module")
def result(bench):
    # RSS needs fresh processes (seconds of imports each): left to the real runs
    return bench.run_benchmark(cases=TINY, scaling=TINY_SCALING, channels=(2, 4), reps=1, warmup=0, scaling_reps=1,
                               rss=False, trainer=False, profile=True, threads=1)


def positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_threads_and_rng_are_restored(result):
    import torch

    assert torch.get_num_threads() == 1  # tests/conftest.py's setting, not the benchmark's 2


HEADLINE = ("time_ratio_exact", "time_ratio_fd", "mem_ratio_exact", "mem_ratio_fd", "time_ratio_fd_onesided",
            "mem_ratio_fd_onesided", "time_ratio_fd_onesided-halfreal", "mem_ratio_fd_onesided-halfreal")


def test_headline_ratios_are_positive(result):
    for key in HEADLINE:
        assert positive(result[key]), key


@pytest.mark.parametrize("case", ["2d", "3d"])
def test_fd_estimators_are_compared_with_exact(result, case):
    for kind in ("fd", "fd_onesided"):
        assert 0.9 < result[f"cosine_{kind}_{case}"] <= 1.0 + 1e-9
    assert result["cosine_fd_onesided"] == result["cosine_fd_onesided_2d"]


def test_half_real_batch_only_where_the_batch_splits(bench, result):
    # 2D batch 2: timed and compared with the exact hypergradient of the same half batch; 3D batch 1: not run
    assert positive(result["time_ratio_fd_onesided-halfreal_adam_2d"])
    assert 0.9 < result["cosine_fd_onesided-halfreal_2d"] <= 1.0 + 1e-9
    assert "time_ratio_fd_onesided-halfreal_adam_3d" not in result
    report = bench.format_report(result, "test", (0.0, 0.0))
    assert "real batch half the synthetic one" in report and "| 2d | adam |" in report


@pytest.mark.parametrize("case", ["2d", "3d"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_every_case_and_optimizer_has_its_ratios(result, case, opt):
    for kind in ("exact", "fd", "fd_onesided"):
        assert positive(result[f"time_ratio_{kind}_{opt}_{case}"])
        assert positive(result[f"mem_ratio_{kind}_{opt}_{case}"])
    assert 0 < result[f"synth_share_none_{case}"] < 1


def test_scaling_breakdown_and_report(bench, result, tmp_path):
    rows = result["scaling"]["2d"]
    assert [row["shape"] for row in rows] == [[8, 8], [16, 16]] and rows[1]["reused_main_case"]
    assert all(positive(row["seconds"]["exact_adam"]) for row in rows)
    assert all(positive(sec) for sec in result["cases"]["2d"]["breakdown"].values())
    assert result["cases"]["2d"]["second_order_nodes"]
    report = bench.format_report(result, "python benchmarks/meta_step.py --test", (0.0, 0.0))
    assert "--test" in report and "torch" in report and "| 2d 2x16x16 (" in report
    path = tmp_path / "results.md"
    bench.write_report(report, path)
    path.write_text(path.read_text() + "\nhand-written note\n")
    bench.write_report(report, path)  # regenerating keeps what sits below the marker
    assert path.read_text().count("hand-written note") == 1


def test_json_output_is_one_object_with_the_headline_keys(bench, result, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run_benchmark", lambda **kwargs: result)  # the toy run above, not a real one
    assert bench.main(["--quick", "--json", "--no-write"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in (*HEADLINE, "cosine_fd_onesided"):
        assert isinstance(data[key], float), key


def test_trainer_steps_and_rss_measurement(bench):
    """The two slower paths at toy size: trainer steps per method, and the RSS measurement a child process runs
    (called in this process: a fresh interpreter costs seconds of imports)."""
    per_step = bench.trainer_steps((16, 16), 2, (2, 4), reps=1, warmup=0, threads=1)  # one cycle of 4 steps
    assert set(per_step) == set(bench.METHOD_RUNS) and all(positive(s) for s in per_step.values())
    assert "learn2synth_default" in per_step and "synthseg" in per_step  # train_ratio_default's two sides
    rss = bench.child_main({"shape": [16, 16], "batch": 2, "channels": [2, 4], "mode": "fd_adam", "threads": 1})
    assert rss["peak_rss_mb"] > 0 and math.isfinite(rss["rss_step_mb"])  # ~0 here: toy tensors, warm process


def test_rss_ratios_of_every_measured_mode(bench, monkeypatch):
    """The RSS path with the child processes faked (a fresh interpreter per mode costs seconds): every timed mode,
    the half-real one included where the batch splits, gets its ratio, and the headline keys exist."""
    sizes = {}

    def fake(shape, batch, channels, mode, threads):
        sizes[mode] = 10.0 + len(mode)
        return {"rss_before_mb": 1.0, "peak_rss_mb": 1.0 + sizes[mode], "rss_step_mb": sizes[mode]}

    monkeypatch.setattr(bench, "rss_in_child", fake)
    result = bench.run_benchmark(cases={"2d": ((16, 16), 2)}, scaling={}, channels=(2, 4), opts=("adam",), reps=1,
                                 warmup=0, rss=True, trainer=False, profile=False, threads=1)
    half = "fd_onesided-halfreal"
    assert result[f"rss_ratio_{half}_adam_2d"] == sizes[f"{half}_adam"] / sizes["plain_adam"]
    assert result[f"rss_ratio_{half}"] == result[f"rss_ratio_{half}_adam_2d"] and positive(result["rss_ratio_exact"])
