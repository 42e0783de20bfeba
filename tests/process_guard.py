"""`make test-fast` starts no server and mounts nothing: a test that does so must be marked integration.

An audit hook (PEP 578) sees every ``subprocess.Popen`` of the test process; while a test without the
``integration`` marker runs, a command that starts a server (``mlflow server``, PostgreSQL) or mounts
a file system is refused with an error naming the test and the marker to add. Audit hooks cannot be
removed, so the hook reads a flag that conftest.py sets around each test.
"""

from __future__ import annotations

import os
import sys
from typing import Any

SERVER_OR_MOUNT = frozenset({"server", "mount", "umount", "initdb", "pg_ctl", "postgres"})
"""Command words that start a server or mount something (argv[0]'s base name, or any later word)."""


class UnmarkedProcessError(RuntimeError):
    """A test outside the integration marker started a server or a mount."""


_current: dict[str, str | None] = {"unmarked_test": None}


def guarded_words(args: object) -> set[str]:
    """The words of a Popen command that start a server or a mount (empty when it does neither)."""
    if isinstance(args, (str, bytes, os.PathLike)):
        words = [os.fsdecode(args)] if not isinstance(args, str) else args.split()
    else:
        words = [os.fsdecode(word) for word in args]  # type: ignore[union-attr]
    names = {os.path.basename(word) for word in words[:1]} | set(words[1:])
    return names & SERVER_OR_MOUNT


def _audit(event: str, args: tuple[Any, ...]) -> None:
    test = _current["unmarked_test"]
    if test is None or event != "subprocess.Popen":
        return
    found = guarded_words(args[1])
    if found:
        raise UnmarkedProcessError(
            f"{test} starts {' '.join(sorted(found))!r} but is not marked integration: add "
            "`pytestmark = pytest.mark.integration` to its module so `make test-fast` stays without servers "
            "and mounts"
        )


def install() -> None:
    sys.addaudithook(_audit)


def guard(test: str | None) -> None:
    """Refuse servers and mounts while ``test`` (an unmarked test's node id) runs; None lifts it."""
    _current["unmarked_test"] = test
