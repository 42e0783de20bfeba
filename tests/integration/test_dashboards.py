"""`make dashboard` and `make mlflow-ui` serve a finished study, on loopback unless told otherwise."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from integration_helpers import FinishedStudy

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve_and_get(command: list[str], url: str, timeout_s: float = 300.0) -> tuple[int, str, str]:
    """Start ``command``, GET ``url`` once it answers, stop it; (status, body, server output)."""
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return response.status, response.read().decode("utf-8", "replace"), ""
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if server.poll() is not None or time.monotonic() > deadline:
                    output = server.stdout.read() if server.stdout else ""
                    pytest.fail(f"{command[:4]} did not serve {url}: exit {server.poll()}\n{output[-3000:]}")
                time.sleep(0.5)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_the_optuna_dashboard_serves_the_newest_study(finished_study: FinishedStudy) -> None:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "dsm5_hpo.cli.dashboard",
        "--experiments-dir",
        str(finished_study.experiments),
        "--port",
        str(port),
    ]
    status, body, _ = _serve_and_get(command, f"http://127.0.0.1:{port}/api/studies")
    assert status == 200
    assert f"study_{finished_study.study['study_id']}" in body  # the study's name in Optuna's storage


def test_the_mlflow_ui_serves_the_study_runs(finished_study: FinishedStudy) -> None:
    port = _free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    db = finished_study.experiments / "mlflow_db" / "mlflow.db"
    command = [
        str(mlflow),
        "ui",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    status, _, _ = _serve_and_get(command, f"http://127.0.0.1:{port}/health")
    assert status == 200


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("mlflow-ui", ["--host 127.0.0.1", "--port 5000", "sqlite:///experiments/mlflow_db/mlflow.db"]),
        ("dashboard", ["-m dsm5_hpo.cli.dashboard", "--host 127.0.0.1", "--port 8080"]),
        ("dashboard STUDY=abc DASHBOARD_PORT=9001", ["--study-id abc", "--port 9001"]),
        ("predict INPUT=posts.csv OUTPUT=out.jsonl", ['--input "posts.csv"', '--output "out.jsonl"']),
        ("report STUDY=abc", ["-m dsm5_hpo.cli.report --study-id abc"]),
        ("status", ["-m dsm5_hpo.cli.status"]),
    ],
)
def test_the_make_targets_run_these_commands(target: str, expected: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", *target.split()],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for piece in expected:
        assert piece in done.stdout, (piece, done.stdout)


def test_make_predict_without_input_says_how_to_call_it() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(
        ["make", "-o", ".venv/.installed", "predict"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode != 0 and "usage: make predict INPUT=posts.csv" in done.stderr
