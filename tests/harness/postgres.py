"""A real PostgreSQL server (initdb + pg_ctl) on a free loopback port in a temporary folder.

The server binaries come from Debian's postgresql package, installed when missing if running as
root with apt-get; otherwise the harness says what to install. PostgreSQL refuses to run as
root, so as root the cluster is created and run as the `postgres` user the package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness.redis import free_port

__all__ = ["RunningPostgres", "postgres_bin", "running_postgres"]


def postgres_bin() -> Path:
    """The folder holding initdb and pg_ctl (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=environment
        )
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "the Postgres tests need PostgreSQL's server binaries "
            "(Debian: apt-get install postgresql)"
        )
    return Path(found[-1]).parent


@dataclass(frozen=True)
class RunningPostgres:
    port: int
    directory: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def query(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql as the superuser; its output, unaligned and without headers
        (`-tA`: one row a line, fields separated by `|`), stripped. Raises on an error."""
        result = subprocess.run(
            [
                *("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"),
                *("-d", database, "-tAc", sql),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.strip()

    def stop(self) -> None:
        """Stop the server as an outage would (`pg_ctl stop -m fast`: sessions are cut)."""
        _stop(self.directory)

    def start(self) -> None:
        """Start the stopped server again, on the same port and data, once it accepts."""
        _start(self.directory, self.port)


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _start(directory: Path, port: int) -> None:
    pg_ctl = str(postgres_bin() / "pg_ctl")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {directory} -c fsync=off"
    start = [pg_ctl, "-D", str(directory / "data"), "-o", options, "-l"]
    subprocess.run(
        _as_server_user([*start, str(directory / "server.log"), "-w", "-t", "60", "start"]),
        check=True,
        capture_output=True,
        timeout=90,
    )


def _stop(directory: Path, *, check: bool = True) -> None:
    pg_ctl = str(postgres_bin() / "pg_ctl")
    subprocess.run(
        _as_server_user([pg_ctl, "-D", str(directory / "data"), "-m", "fast", "stop"]),
        check=check,
        capture_output=True,
        timeout=60,
    )


@contextmanager
def running_postgres() -> Iterator[RunningPostgres]:
    binaries = postgres_bin()
    with tempfile.TemporaryDirectory(prefix="replaybus-postgres-") as folder:
        directory = Path(folder)
        data = directory / "data"
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        port = free_port()
        subprocess.run(
            _as_server_user(
                [
                    *(str(binaries / "initdb"), "-D", str(data), "-U", "postgres"),
                    *("-A", "trust", "--no-sync", "-E", "UTF8"),
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        _start(directory, port)
        try:
            yield RunningPostgres(port, directory)
        finally:
            _stop(directory, check=False)  # perhaps stopped already, by a test's outage
