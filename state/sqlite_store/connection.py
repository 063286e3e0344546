"""Where the SQLite file lives, how it is opened, and what its errors mean to a user.

The data directory is created private (0700) and the database file, with its ``-wal`` and
``-shm`` companions, is kept private (0600): the ledger holds requirements, plans and code.
Files of ours that are more open are tightened; a directory that existed before and is open
to others is only warned about, since it may hold more than the store.

A file or directory this process cannot write is opened read-only, so that listing and
inspecting work on a read-only mount or a copy without write permission: ``mode=ro`` when
the directory is writable (SQLite can still make the ``-shm`` file it needs to read a WAL
database), and ``immutable=1`` when it is not (nothing can change the file then; a ``-wal``
left by a crashed writer is not read in that case, and a warning says so).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog

from state.errors import StoreCorruptError, StoreError

log = structlog.get_logger(__name__)

DB_FILENAME = "orchestrator.db"
APP_DIR_NAME = "hybrid-orchestrator"
DATA_DIR_ENV = "ORCHESTRATOR_DATA_DIR"
DIR_MODE = 0o700
FILE_MODE = 0o600
SIDECARS = ("-wal", "-shm")

_SQLITE_MAGIC = b"SQLite format 3\x00"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the store lives when no directory is given.

    ``$ORCHESTRATOR_DATA_DIR`` if set, else ``$XDG_DATA_HOME/hybrid-orchestrator`` (when that
    is an absolute path, as the XDG spec requires), else
    ``~/.local/share/hybrid-orchestrator``.

    Args:
        environ: the environment to read (default: ``os.environ``).
    """
    env = os.environ if environ is None else environ
    explicit = env.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / APP_DIR_NAME
    return Path.home() / ".local" / "share" / APP_DIR_NAME


def prepare_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` private (0700), or warn when an existing one is open to others.

    Raises:
        StoreError: it cannot be created.
    """
    if data_dir.is_dir():
        mode = stat.S_IMODE(data_dir.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "store.dir.open_to_others",
                data_dir=str(data_dir),
                mode=oct(mode),
                advice=f"chmod 700 {data_dir}: the store holds requirements, plans and code",
            )
        return
    try:
        data_dir.mkdir(parents=True, mode=DIR_MODE)
        os.chmod(data_dir, DIR_MODE)  # exactly 0700, whatever the umask
    except FileExistsError:
        return  # another process made it at the same moment
    except OSError as exc:
        raise StoreError(
            f"cannot create the data directory {data_dir} ({exc.strerror}); "
            f"set {DATA_DIR_ENV} to a writable directory"
        ) from exc


def can_write(data_dir: Path, path: Path) -> bool:
    """Whether this process may write the store: its directory, and its file if it exists.

    ``os.access`` answers for the real user, so for root it is True except on a read-only
    mount; callers wanting read-only access regardless say so explicitly.
    """
    if not os.access(data_dir, os.W_OK):
        return False
    return not path.exists() or os.access(path, os.W_OK)


def tighten_files(path: Path) -> None:
    """Make the database file and its companions 0600, creating the file so when missing.

    SQLite gives ``-wal`` and ``-shm`` the mode of the database file, so a private file
    keeps its companions private too.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(
            f"cannot create the store {path} ({exc.strerror}); check the permissions of "
            f"{path.parent}, or set {DATA_DIR_ENV} to a writable directory"
        ) from exc
    else:
        os.close(fd)
    for file in (path, *(path.with_name(path.name + s) for s in SIDECARS)):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                os.chmod(file, FILE_MODE)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("store.file.open_to_others", path=str(file), error=exc.strerror)


def check_header(path: Path) -> None:
    """Refuse, before SQLite touches it, a file that is not a SQLite database.

    Raises:
        StoreCorruptError: the file lacks the SQLite header.
        StoreError: the file cannot be read.
    """
    try:
        with path.open("rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(
            f"cannot read the store {path} ({exc.strerror}); check its permissions "
            f"or set {DATA_DIR_ENV} to another directory"
        ) from exc
    if head and (len(head) < 100 or not head.startswith(_SQLITE_MAGIC)):
        raise StoreCorruptError(
            f"{path} is not a SQLite database (it lacks the SQLite header); it was "
            f"left untouched. Move it away, or set {DATA_DIR_ENV} to another directory"
        )


def connect(path: Path, *, read_only: bool, busy_timeout_s: float) -> sqlite3.Connection:
    """An autocommit connection to ``path`` (we issue BEGIN/COMMIT ourselves).

    Raises:
        sqlite3.Error: SQLite could not open it.
        StoreError: read-only, and there is no database to read; or this SQLite is older
            than 3.35 (the store's statements use ``RETURNING``).
    """
    if sqlite3.sqlite_version_info < (3, 35, 0):
        raise StoreError(
            f"{path}: the store needs SQLite 3.35 or newer, and this Python has SQLite "
            f"{sqlite3.sqlite_version}; use a Python built with a newer SQLite"
        )
    if not read_only:
        target: str = str(path)
        uri = False
    else:
        if not path.is_file() or path.stat().st_size == 0:
            raise StoreError(
                f"there is no store at {path}, and {path.parent} is not writable, so none "
                f"can be made; set {DATA_DIR_ENV} to a writable directory"
            )
        query = "mode=ro"
        if not os.access(path.parent, os.W_OK):
            query += "&immutable=1"
            wal = path.with_name(path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                log.warning(
                    "store.read_only.wal_ignored",
                    path=str(wal),
                    advice="the last writes of a crashed writer are not shown; open the "
                    "store writable once to fold them in",
                )
        target = f"file:{quote(str(path.resolve()))}?{query}"
        uri = True
    return sqlite3.connect(
        target,
        timeout=busy_timeout_s,
        isolation_level=None,
        check_same_thread=False,  # the store serializes access with its own lock
        uri=uri,
    )


def configure(conn: sqlite3.Connection, path: Path, durability: str) -> None:
    """Switch a writable connection to WAL and the synchronous level of ``durability``.

    Raises:
        StoreError: the file system cannot do WAL (network file systems, some containers).
    """
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(
            f"{path}: SQLite cannot use WAL mode on this file system (got "
            f"{mode!r}); set {DATA_DIR_ENV} to a directory on a local disk"
        )
    sync = "FULL" if durability == "full" else "NORMAL"
    conn.execute(f"PRAGMA synchronous = {sync}")
    if durability == "full":
        conn.execute("PRAGMA fullfsync = ON")  # macOS: fsync alone skips the disk cache


def translate(
    exc: sqlite3.Error,
    doing: str,
    path: Path,
    busy_timeout_s: float,
    workflow_id: str | None = None,
) -> StoreError:
    """Our error for a sqlite3 error, saying what happened and what to do about it."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    subject = f"workflow {workflow_id}: " if workflow_id else ""
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or (
        type(exc) is sqlite3.DatabaseError and not code
    ):
        return StoreCorruptError(
            f"{subject}could not {doing}: the database {path} is damaged ({exc}); "
            "it was left as it is. Restore it from a backup, or move it away to start "
            "a new store"
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(
            f"{subject}could not {doing}: {path} stayed locked by another process "
            f"for more than {busy_timeout_s:g}s; retry when it is done"
        )
    if code == sqlite3.SQLITE_FULL:
        return StoreError(
            f"{subject}could not {doing}: the disk holding {path} is full; free "
            "some space and retry"
        )
    if code in (
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_IOERR,
    ):
        return StoreError(
            f"{subject}could not {doing}: cannot read or write {path} ({exc}); "
            f"check its permissions, or set {DATA_DIR_ENV} to a writable directory"
        )
    return StoreError(f"{subject}could not {doing} in {path}: {exc}")


class Tx:
    """A transaction on a connection, as ``state.sql_core`` uses it (``sql_core.Tx``)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        """Run ``sql`` and return its first row, or None."""
        row: tuple[Any, ...] | None = self._conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` and return its rows."""
        return self._conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run ``sql`` and return how many rows it changed."""
        return self._conn.execute(sql, params).rowcount

    def many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run ``sql`` once per row of parameters."""
        self._conn.executemany(sql, rows)
