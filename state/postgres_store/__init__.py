"""``PostgresStore``: the ``Store`` in a PostgreSQL database, shared by workers on many hosts.

It keeps what the SQLite store keeps, the same way: the same tables, state heads, records,
configurations and ledger payloads as the JSON text of ``state.codec``, times as fixed-width
UTC text, and the lease rules of ``state.leasing``. Connections come from a pool
(psycopg_pool) and autocommit: a commit is one statement (its conditional UPDATE of the
workflow row gates the ledger and record inserts), other writes one transaction at READ
COMMITTED. That UPDATE is what serializes writers of one workflow, so a lost race is a
``ConcurrencyError`` and never a half-written ledger.

Migrations (``MIGRATIONS``, one function per schema version) run on open in one
transaction under an advisory lock, so workers starting together migrate once; a database
written by a newer schema is refused and left as it is.

What is stored, and how a commit writes only what changed, is ``state.sql_core``'s,
shared with the SQLite store. Modules: ``connection`` (the pool, where the database is,
psycopg errors in our words, ``Tx``), ``schema`` (tables and migrations, ``MIGRATIONS``),
``queue`` (the work queue's PostgreSQL part: ``SKIP LOCKED`` claims, LISTEN/NOTIFY; the
rest is ``state.sql_queue``'s) and ``store`` (``PostgresStore``). Code outside the store
builds one through ``orchestrator.composition.open_store``.
"""

__all__ = ["connection", "queue", "schema", "store"]

STORE_ENV = "ORCHESTRATOR_STORE"
"""The environment variable naming the store URL (``--store``); defined here, not in
``connection``, so naming it does not import psycopg (SQLite workers start without it)."""
