"""benchmarks/pruners.py --quick runs end to end: a study per pruner, its figures in the last line.

A smoke test only: which pruner wins on 2 trials says nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.integration


def test_quick_pruners_benchmark_prints_a_study_per_pruner() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "pruners.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("machine: ")
    figures = json.loads(lines[-1])
    assert set(figures["pruners"]) == {"hyperband", "none"} and figures["winner"] in figures["pruners"]
    for name, study in figures["pruners"].items():
        assert study["trials_finished"] == 2 and study["failed"] == 0, name
        assert study["complete"] + study["pruned"] == 2 and study["best_value"] is not None, name
    assert figures["pruners"]["none"]["pruned"] == 0
