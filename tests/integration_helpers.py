"""A real tiny-model study through the CLI entry point, shared by integration and contract tests."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import CONFIG_FILE, TINY_OVERRIDES
from dsm5_hpo.cli import train


@dataclass
class FinishedStudy:
    experiments: Path
    study_dir: Path
    study: dict[str, Any]
    report: dict[str, Any]
    stdout: str


def run_study(experiments: Path, cache: Path, *extra: str, unpinned: tuple[str, ...] = ()) -> FinishedStudy:
    """Run the train CLI in-process (its final summary is captured) and read back what it wrote.
    ``unpinned``: keys of TINY_OVERRIDES left out (a command-line key is fixed, not searched)."""
    overrides = [
        *(o for o in TINY_OVERRIDES if o.split("=", 1)[0] not in unpinned),
        "tracking=mlflow_sqlite",
        f"paths.experiments_dir={experiments}",
        f"paths.cache_dir={cache}",
        *extra,
    ]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = train.main(["--config", str(CONFIG_FILE), *overrides])
    out = buffer.getvalue()
    assert code == 0, out
    (study_dir,) = experiments.glob("study_*")
    study = json.loads((study_dir / "study.json").read_text())
    report = json.loads((study_dir / "evaluation_report.json").read_text())
    return FinishedStudy(experiments, study_dir, study, report, out)
