"""The version of this code, as checkpoints, reports and exports record it."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import dsm5_hpo


@functools.cache
def code_version() -> str:
    """Package version plus the git commit when run from a checkout; read once per process (every
    checkpoint records it, from the save thread: a `git` process per save would cost as much as the save
    of a tiny model)."""
    version = dsm5_hpo.__version__
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{sha}" if sha else version
