"""``PostgresStore``: the ``Store`` in a PostgreSQL database, shared by workers on many hosts.

It keeps what the SQLite store keeps, the same way: the same tables, snapshots,
configurations and ledger payloads as the JSON text of ``state.codec``, times as fixed-width
UTC text, and the lease rules of ``state.leasing``. Connections come from a pool
(psycopg_pool), each call one transaction at READ COMMITTED; a commit's conditional UPDATE
of the workflow row is what serializes writers of one workflow, so a lost race is a
``ConcurrencyError`` and never a half-written ledger.

Migrations (``MIGRATIONS``, one function per schema version) run on open in one
transaction under an advisory lock, so workers starting together migrate once; a database
written by a newer schema is refused and left as it is.

Modules: ``connection`` (the pool, where the database is, psycopg errors in our words),
``schema`` (tables and migrations, ``MIGRATIONS``), ``rows`` (the SQL of every table) and
``store`` (``PostgresStore``). Code outside the store builds one through
``orchestrator.composition.open_store``.
"""

__all__ = ["connection", "queue", "rows", "schema", "store"]
