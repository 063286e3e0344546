"""``SQLiteStore``: the embedded default store, one SQLite file under a data directory.

The file is ``orchestrator.db`` in ``default_data_dir()`` unless another directory is given.
It runs in WAL mode, so readers never wait for the writer, and every write is one
``BEGIN IMMEDIATE`` transaction, so two processes queue on the write lock (``busy_timeout``)
instead of failing half-way. ``durability="normal"`` (synchronous=NORMAL) survives a crash of
the process; ``durability="full"`` (synchronous=FULL) also survives a power loss, at the cost
of an fsync per commit.

The file is never overwritten or repaired: a file that is not a SQLite database, a damaged
one, one written by a newer schema, or a row that fails validation raises an error and leaves
the file as it was. Migrations (``MIGRATIONS``, one function per schema version) run on open,
all in one transaction.

What is stored, and how a commit writes only what changed, is ``state.sql_core``'s,
shared with the PostgreSQL store. Modules: ``connection`` (where the file lives, its
permissions, opening it read-write or read-only, sqlite3 errors in our words, ``Tx``),
``schema`` (tables and migrations), ``queue`` (the work queue's SQLite part: waking
idle workers of this process; the rest is ``state.sql_queue``'s), ``checkpoints`` (the WAL
copied back into the file on a thread of its own, so that no commit waits for it) and
``store`` (the class).
Code outside the store builds one through ``orchestrator.composition.open_store``.
"""

from state.sqlite_store.connection import (
    APP_DIR_NAME,
    DATA_DIR_ENV,
    DB_FILENAME,
    DIR_MODE,
    FILE_MODE,
    default_data_dir,
)
from state.sqlite_store.schema import MIGRATIONS, STORE_SCHEMA_VERSION, Migration
from state.sqlite_store.store import Durability, SQLiteStore

__all__ = [
    "APP_DIR_NAME",
    "DATA_DIR_ENV",
    "DB_FILENAME",
    "DIR_MODE",
    "FILE_MODE",
    "MIGRATIONS",
    "STORE_SCHEMA_VERSION",
    "Durability",
    "Migration",
    "SQLiteStore",
    "checkpoints",
    "connection",
    "default_data_dir",
    "queue",
    "schema",
    "store",
]
