"""A throwaway PostgreSQL server on loopback for the shared-storage tests and benchmark.

Uses the system's PostgreSQL binaries (Debian/Ubuntu: apt-get install postgresql; .ci/run installs
them). PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user the
package creates. Trust authentication on 127.0.0.1 only; the data lives in a temporary folder that is
deleted on stop.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def postgres_bin() -> Path | None:
    """The folder with initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def unavailable_reason() -> str | None:
    """Why no server can be started here (None: it can)."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (no initdb/pg_ctl; .ci/run installs it with apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_server(database: str = "optuna", user: str = "dsm5") -> Iterator[str]:
    """Start a server, create ``database``; yields its URL (no password: trust on loopback)."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    binaries = postgres_bin()
    assert binaries is not None
    root = Path(tempfile.mkdtemp(prefix="dsm5-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = _free_port()
    data = root / "data"

    def run(*command: str) -> None:
        done = subprocess.run(
            _as_owner(list(command)), capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            log = (root / "server.log").read_text(errors="replace") if (root / "server.log").exists() else ""
            raise RuntimeError(
                f"{command[0]} failed ({done.returncode}): {done.stderr[-2000:]}\n{log[-2000:]}"
            )

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "--no-sync")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        run(
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(root / "server.log"),
            "-w",
            "start",
        )
        run(str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database)
        yield f"postgresql://{user}@127.0.0.1:{port}/{database}"
    finally:
        subprocess.run(
            _as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
