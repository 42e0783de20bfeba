"""The guard that keeps servers and mounts out of `make test-fast` (tests/process_guard.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from process_guard import UnmarkedProcessError, guarded_words


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ([sys.executable, "-m", "mlflow", "server", "--port", "5000"], {"server"}),
        ("mlflow server --host 127.0.0.1", {"server"}),
        (["mount", "-t", "tmpfs", "tmpfs", "/mnt"], {"mount"}),
        (["/usr/lib/postgresql/16/bin/initdb", "-D", "/tmp/pg"], {"initdb"}),
        ([b"/usr/bin/pg_ctl", b"start"], {"pg_ctl"}),
        (["git", "ls-files", "--", "Dockerfile"], set()),
        ([sys.executable, "-m", "dsm5_hpo.cli.train", "--help"], set()),
    ],
)
def test_commands_that_start_a_server_or_a_mount_are_recognised(command: object, words: set[str]) -> None:
    assert guarded_words(command) == words


def test_an_unmarked_test_cannot_start_a_server() -> None:
    # This module is not marked integration: the audit hook refuses before anything is executed.
    with pytest.raises(
        UnmarkedProcessError, match=r"test_an_unmarked_test_cannot_start_a_server.*integration"
    ):
        subprocess.Popen([sys.executable, "-c", "pass", "server"])


def test_an_unmarked_test_may_start_other_processes() -> None:
    assert subprocess.run([sys.executable, "-c", "pass"], check=False).returncode == 0


@pytest.mark.integration
def test_a_test_marked_integration_may_start_a_server() -> None:
    # "server" here is only an argument to a no-op interpreter: what is checked is that the guard lets it by.
    assert subprocess.run([sys.executable, "-c", "pass", "server"], check=False).returncode == 0
