"""A throw-away PostgreSQL server for the tests: `initdb` into a temp folder, started with `pg_ctl`
on a unix socket only (no TCP port to clash with anything), as the `postgres` user when the tests
run as root (the server refuses to run as root). Settings trade durability for speed (fsync off):
the data dies with the test session anyway.

`find_bindir` looks where Debian puts the server (`/usr/lib/postgresql/<major>/bin`), then on PATH
(Homebrew, Postgres.app). `.ci/run` installs Debian's `postgresql` package when neither has it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

SUPERUSER = "ttsd"
PORT = 5432
"""Only part of the socket file's name: with no TCP listener, every cluster can use it."""


def find_bindir() -> Path | None:
    """The folder of the newest PostgreSQL server binaries on this machine, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[4]))
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _server_user() -> dict[str, Any]:
    """How to run the server's programs: as `postgres` when we are root, else as ourselves."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root, and there is no 'postgres' user to run the server as") from exc
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [], "owner": account}


class Cluster:
    """One PostgreSQL server in its own temp folder; `url()` names a database on it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # A short path: a unix socket's full name must fit in 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="ttsd-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self._as = _server_user()
        owner = self._as.pop("owner", None)
        if owner is not None:
            # The server's own folder; pytest's tmp_path (0700, root's) would be out of its reach.
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as["env"] = {"PATH": "/usr/bin:/bin", "HOME": str(self.root), "LC_ALL": "C.UTF-8"}

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(self.bindir / program), *args], cwd=self.root, check=True, capture_output=True, text=True, **self._as
        )

    def init(self) -> None:
        """Create the cluster (about half a second)."""
        self._run(
            "initdb", "-D", str(self.data), "--auth=trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C.UTF-8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-k {self.root} -p {PORT} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c shared_buffers=32MB -c max_connections=300 -c timezone=UTC"
        )
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: sessions are cut off; `immediate`: as if it crashed)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again: every open connection breaks."""
        self.stop(mode)
        self.start()

    def url(self, database: str = "postgres") -> str:
        """A `TTS_DATABASE_URL` for `database` on this server."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.root}&port={PORT}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"ttsd_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=str(self.root), port=PORT, user=SUPERUSER, dbname="postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def cleanup(self) -> None:
        """Stop the server at once and remove its folder."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine to start one with."""


@contextlib.contextmanager
def postgres_server() -> Iterator[Cluster]:
    """A throw-away PostgreSQL server, running until the block ends, then removed."""
    bindir = find_bindir()
    if bindir is None:
        raise PostgresMissing(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` package "
            "(`scripts/install.sh --dev` does where apt can) or put initdb on PATH"
        )
    cluster = Cluster(bindir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()
