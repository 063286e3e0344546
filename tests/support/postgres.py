"""A throwaway PostgreSQL server for the test session, from Debian's ``postgresql`` package.

``PostgresServer.start`` runs ``initdb`` in a temporary directory and starts the server on a
Unix socket in it (no TCP port at all), with fsync off since the data dies with the session
(``durable=True`` keeps PostgreSQL's own defaults, fsync and synchronous commit, for the
benchmarks).
PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
``postgres`` system user the package creates (or ``nobody``), owning the directory.
``new_database`` hands out a fresh, empty database per test; ``restart`` cuts every session
off and starts the server again on the same data (the workers' fault tests); ``stop`` ends
the server and removes the directory.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

SUPERUSER = "postgres"


BIN_ENV = "ORCHESTRATOR_TEST_PG_BIN"
"""Names the directory of ``initdb`` and ``pg_ctl`` instead of the Debian location."""


def find_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with ``initdb`` and ``pg_ctl``, or None.

    ``$ORCHESTRATOR_TEST_PG_BIN``, when set, is the only place looked at (another build of
    PostgreSQL, or a directory without it to see the tier skip).
    """
    if os.environ.get(BIN_ENV):
        given = Path(os.environ[BIN_ENV])
        return given if (given / "initdb").is_file() and (given / "pg_ctl").is_file() else None
    found = [
        Path(d)
        for d in glob.glob("/usr/lib/postgresql/*/bin")
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file()
    ]
    found.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    return found[-1] if found else None


def unavailable_reason() -> str | None:
    """Why no server can be started here, in one line, or None when one can."""
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (pip install 'psycopg[binary]' psycopg_pool)"
    if find_bin() is None:
        return "PostgreSQL is not installed (apt-get install postgresql; scripts/install does)"
    if os.geteuid() == 0 and _server_user() is None:
        return "running as root and there is no postgres or nobody user to run PostgreSQL as"
    return None


def _server_user() -> pwd.struct_passwd | None:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


class PostgresServer:
    """One PostgreSQL server in a temporary directory, reached on a Unix socket there."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        bindir = find_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed")
        self.bindir = bindir
        # Short: a Unix socket path may not exceed about 100 characters.
        self.root = Path(tempfile.mkdtemp(prefix="orch-pg-"))
        self.data = self.root / "data"
        self.user = _server_user() if os.geteuid() == 0 else None
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user.pw_name, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}")

    def url(self, database: str = "postgres") -> str:
        """The libpq URL of ``database`` on this server's socket."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.root}"

    def start(self) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.root}' "
            "-c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def restart(self) -> None:
        """Restart the server (``-m fast``: every session is cut off), keeping its data."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-m", "fast",
            "-w", "-t", "60", "restart",
        )  # fmt: skip

    def new_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self._run("createdb", "-h", str(self.root), "-U", SUPERUSER, "-T", "template0", name)
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (at once: the data is thrown away) and remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
