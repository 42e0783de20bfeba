"""code_version(): read once per process, not once per checkpoint."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

import dsm5_hpo
from dsm5_hpo import provenance as version


def test_git_is_asked_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="abc1234\n", stderr="")

    monkeypatch.setattr(version.subprocess, "run", run)
    version.code_version.cache_clear()
    try:
        assert [version.code_version() for _ in range(50)] == [f"{dsm5_hpo.__version__}+gabc1234"] * 50
        assert len(calls) == 1
    finally:
        version.code_version.cache_clear()


def test_outside_a_checkout_it_is_the_package_version(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("git")

    monkeypatch.setattr(version.subprocess, "run", run)
    version.code_version.cache_clear()
    try:
        assert version.code_version() == dsm5_hpo.__version__
    finally:
        version.code_version.cache_clear()
