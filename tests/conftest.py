"""Shared fixtures: the real config, shrunk (tiny model, few posts, short windows, tmp dirs).

Like lightning-hydra-template, tests compose configs/hpo_study.yaml through the same code
as the CLI and only override what makes them fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import process_guard
from dsm5_hpo.cli.common import compose_config
from dsm5_hpo.config import StudyConfig
from dsm5_hpo.utils.logging import setup_logging

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILE = REPO_ROOT / "configs" / "hpo_study.yaml"
SAMPLE_DIR = REPO_ROOT / "Data" / "redsm5_sample"

# Nothing in the suite may reach the hub (it is unreachable here, and CI must not hang on it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TINY_OVERRIDES = (
    "model=tiny",
    "tracking=none",
    f"data.local_dir={SAMPLE_DIR}",
    "data.max_posts=24",
    "data.max_length=64",
    "data.doc_stride=16",
    "train.max_epochs=2",
    "train.eval_batch_size=128",
    "train.log_every_n_steps=2",
    "hpo.n_trials=2",
    "hpo.pruner=none",
    # The mechanics the unit and integration tests were written against (a window per pair, a span
    # head); the default recipe (multi_label, sentence evidence) runs through the CLI in
    # test_quality_benchmark.py, test_input_formats.py and the model and feature tests.
    "data.input_format=binary_pairs",
    "heads.evidence_unit=span",
)


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    setup_logging("INFO")


process_guard.install()


@pytest.fixture(autouse=True)
def _no_server_or_mount_outside_integration(request: pytest.FixtureRequest) -> Iterator[None]:
    """`make test-fast` runs the tests without the integration marker: none may start a server or mount."""
    marked = request.node.get_closest_marker("integration") is not None
    process_guard.guard(None if marked else request.node.nodeid)
    yield
    process_guard.guard(None)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole session, so the tiny model is built once."""
    return tmp_path_factory.mktemp("model_cache")


def compose_tiny(experiments: Path, cache: Path, *extra: str) -> StudyConfig:
    """The real study config, shrunk for tests; ``extra`` overrides win."""
    overrides = [*TINY_OVERRIDES, f"paths.experiments_dir={experiments}", f"paths.cache_dir={cache}", *extra]
    return compose_config(CONFIG_FILE, overrides)


@pytest.fixture
def tiny_config(tmp_path: Path, model_cache: Path) -> StudyConfig:
    return compose_tiny(tmp_path / "experiments", model_cache)


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):  # type: ignore[no-untyped-def]
    """A real 2-trial tiny study run once per session through the train CLI (MLflow on SQLite)."""
    from integration_helpers import run_study

    return run_study(tmp_path_factory.mktemp("study") / "experiments", model_cache)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured_logs(name: str) -> Iterator[list[logging.LogRecord]]:
    """Every record logged to ``name`` (at any level) inside the block.

    caplog cannot be used: the package logger 'dsm5_hpo' does not propagate to the root logger.
    """
    handler, logger = _ListHandler(), logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def run_benchmark(script: str, *args: str, timeout: int = 600) -> tuple[list[str], dict[str, Any]]:
    """``benchmarks/<script> args`` as ``make bench`` runs it: the lines it printed and its figures (the
    JSON object of its last line). A failed run fails the test with the end of its output."""
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return lines, json.loads(lines[-1])
