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


def test_isbi_quick_runs_every_method_and_writes_report(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks" / "experiments"))
    try:
        import common
        import exp_isbi
    finally:
        sys.path.pop(0)
    out = tmp_path / "exp_isbi.md"
    code = exp_isbi.main(["--data", str(DATA), "--quick", "--set", "steps=2", "--test-crop", "64",
                          "--out", str(out), "--work", str(tmp_path / "work")])
    assert code == 0
    text = out.read_text()
    for method in common.METHODS:
        assert f"| {method} |" in text
    assert "Wilcoxon" in text and "--quick" in text
    assert out.with_suffix(".png").stat().st_size > 0
    assert (tmp_path / "work" / "results.json").exists()
