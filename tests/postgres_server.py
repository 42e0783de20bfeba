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


class PostgresServer:
    """A running throwaway server: its URL, and stop/start (same data, same port) to simulate a restart."""

    def __init__(self, root: Path, port: int, user: str, database: str) -> None:
        self.root, self.port, self.user, self.database = root, port, user, database
        self.data = root / "data"
        self.url = f"postgresql://{user}@127.0.0.1:{port}/{database}"

    def run(self, *command: str) -> None:
        binaries = postgres_bin()
        assert binaries is not None
        done = subprocess.run(
            _as_owner([str(binaries / command[0]), *command[1:]]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            log = (
                (self.root / "server.log").read_text(errors="replace")
                if (self.root / "server.log").exists()
                else ""
            )
            raise RuntimeError(
                f"{command[0]} failed ({done.returncode}): {done.stderr[-2000:]}\n{log[-2000:]}"
            )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        )
        self.run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast``: what a restart by an administrator does (clients are disconnected)."""
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def connections(self) -> dict[str, int]:
        """Client connections to the database now, by application_name (this query's own excluded)."""
        import psycopg

        query = (
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() GROUP BY 1"
        )
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as connection:
            return {str(name): int(count) for name, count in connection.execute(query).fetchall()}


@contextmanager
def postgres_instance(database: str = "optuna", user: str = "dsm5") -> Iterator[PostgresServer]:
    """Start a server, create ``database``; yields the running server (trust auth on loopback)."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="dsm5-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    server = PostgresServer(root, _free_port(), user, database)
    try:
        server.run("initdb", "-D", str(server.data), "-U", user, "--auth=trust", "--no-sync")
        server.start()
        server.run("createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", user, database)
        yield server
    finally:
        binaries = postgres_bin()
        assert binaries is not None
        subprocess.run(
            _as_owner([str(binaries / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server(database: str = "optuna", user: str = "dsm5") -> Iterator[str]:
    """Start a server, create ``database``; yields its URL (no password: trust on loopback)."""
    with postgres_instance(database, user) as server:
        yield server.url
