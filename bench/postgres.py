"""Durable decisions per second on PostgreSQL, beside SQLite and LangGraph's PostgresSaver.

The same scripted trace and the same durable driver as ``bench/durable.py`` (per workflow
``create`` and ``acquire_lease``; per decision a ``commit`` of the new state with its
``DecisionEntry`` before the instant stub step runs, the step's result going with the next
decision; at a gate the answer committed; at the end ``release_lease``), against:

- ``PostgresStore`` on a PostgreSQL server this script starts (Debian's ``postgresql``
  package: ``initdb`` in a temporary directory, a Unix socket, PostgreSQL's default
  durability: fsync on, synchronous_commit on, so each commit waits for its WAL flush),
  or on ``--url`` (an empty database: every table of ours in it is used as is);
- ``SQLiteStore`` with durability "normal" and "full" in a temporary directory on the
  same disk;
- LangGraph with ``PostgresSaver`` on the same server (a database of its own), through
  ``peers.bench_langgraph`` as ``bench/durable.py`` drives SqliteSaver: as peers.py calls
  it (durability "async") and with durability "sync" (each checkpoint written before the
  next step, which is what our runner promises).

Each in a fresh database or directory, in one process, best of ``--repeat``, interleaved.
With ``--synchronous-commit off`` the started server's commits stop waiting for their WAL
flush (a crash of the server may lose the last fraction of a second of commits, never
corrupt them), which shows what each engine costs besides the disk's flush.

Then the same with workflows in flight (``--in-flight``, as ``bench/durable.py``): ours as
tasks on one event loop sharing one ``AsyncStore`` (commits grouped into one transaction,
one WAL flush), LangGraph as as many threads on a ``PostgresSaver`` over a pool of as many
connections (each checkpoint its own transaction; the server may share flushes of
commits that arrive together).

    python -m bench.postgres [--workflows 100] [--repeat 3] [--url postgresql://...]
                             [--synchronous-commit off] [--in-flight 1 16 64]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import psycopg
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from bench._peers import load_peers
from bench.durable import (
    InFlight,
    Sample,
    add_in_flight_option,
    bench_ours,
    in_flight_report,
    langgraph_durability,
    langgraph_in_threads,
    make_durable_runner,
    ours_in_flight,
)
from orchestrator.composition import open_store
from orchestrator.logsetup import configure_logging
from state.steps import WorkflowStatus

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.postgres import PostgresServer, unavailable_reason


@contextmanager
def databases(url: str | None, synchronous_commit: str) -> Iterator[Callable[[], str]]:
    """A maker of fresh database URLs: on ``url``'s server, or on a server started here."""
    if url is not None:
        admin = url

        def fresh_on_url() -> str:
            name = f"bench_{os.getpid()}_{time.perf_counter_ns()}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            info = psycopg.conninfo.conninfo_to_dict(admin)
            info["dbname"] = name
            return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]

        yield fresh_on_url
        return
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"cannot start PostgreSQL: {reason}; or pass --url")
    server = PostgresServer(durable=True)
    try:
        server.start()
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_commit = {synchronous_commit}")
            conn.execute("SELECT pg_reload_conf()")
        yield server.new_database
    finally:
        server.stop()


def bench_postgres_store(peers: ModuleType, n: int, url: str) -> tuple[Sample, str]:
    """``n`` durable workflows through ``PostgresStore``; the sample and the server settings."""
    with open_store(url) as store:
        run = make_durable_runner(peers, store, owner=f"bench-{os.getpid()}", coalesce=True)
        warm = run(-1)
        assert warm.status is WorkflowStatus.COMPLETED, warm.machine_state
        gc.collect()
        decisions = 0
        t = time.perf_counter()
        for i in range(n):
            decisions += len(run(i).decisions)
        secs = time.perf_counter() - t
    return Sample(secs, decisions, "PostgresStore"), server_settings(url)


def server_settings(url: str) -> str:
    """The durability settings the server reports."""
    with psycopg.connect(url) as conn:
        values = [
            f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"  # type: ignore[index]
            for name in ("fsync", "synchronous_commit", "wal_sync_method")
        ]
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    return f"PostgreSQL {version}, " + ", ".join(values)


def smallest_commit_us(url: str, n: int = 300) -> float:
    """Median microseconds of a one-row INSERT committed on its own: one WAL flush."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS flush_probe (payload TEXT NOT NULL)")
        times = []
        for _ in range(n):
            t = time.perf_counter()
            conn.execute("INSERT INTO flush_probe (payload) VALUES (%s)", ("x" * 600,))
            times.append(time.perf_counter() - t)
        conn.execute("DROP TABLE flush_probe")
    return statistics.median(times) * 1e6


def bench_langgraph_postgres(peers: ModuleType, n: int, url: str, mode: str | None) -> Sample:
    """peers.bench_langgraph with PostgresSaver on ``url`` (its tables made first)."""
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
        gc.collect()
        with langgraph_durability(mode):
            secs = peers.bench_langgraph(n, saver)
    return Sample(secs, n * peers.DECISIONS_PER_WORKFLOW, f"durability={mode or 'async'}")


def bench_postgres_in_flight(peers: ModuleType, n: int, k: int, url: str) -> InFlight:
    """``n`` workflows, ``k`` in flight through one ``AsyncStore`` on ``PostgresStore``."""
    with open_store(url) as store:
        return ours_in_flight(peers, n, k, store, "PostgresStore")


def bench_langgraph_postgres_threads(peers: ModuleType, n: int, k: int, url: str) -> Sample:
    """PostgresSaver on a pool of ``k`` connections, ``k`` threads each running workflows."""
    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    with ConnectionPool(url, min_size=k, max_size=k, kwargs=kwargs, open=True) as pool:
        saver = PostgresSaver(pool)  # type: ignore[arg-type]
        saver.setup()
        secs, decisions = langgraph_in_threads(peers, n, k, saver)
    return Sample(secs, decisions, f"{k} threads, a pool of {k}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workflows", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs for each engine")
    ap.add_argument("--url", help="an existing server's database to make databases on")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument(
        "--synchronous-commit",
        choices=("on", "off"),
        default="on",
        help="the started server's synchronous_commit (on: each commit waits for its flush)",
    )
    add_in_flight_option(ap)
    args = ap.parse_args()
    configure_logging("console", level="ERROR")
    peers = load_peers()
    n = args.workflows
    names = {
        "pg": "hybrid-orchestrator PostgresStore",
        "sqlite-normal": "hybrid-orchestrator SQLiteStore (normal)",
        "sqlite-full": "hybrid-orchestrator SQLiteStore (full)",
        "lg-pg": "langgraph PostgresSaver (as peers.py: async)",
        "lg-pg-sync": "langgraph PostgresSaver (durability=sync)",
    }
    samples: dict[str, list[Sample]] = {k: [] for k in names}
    settings = ""
    load_before = os.getloadavg()[0]
    with databases(args.url, args.synchronous_commit) as fresh:
        for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all alike
            sample, settings = bench_postgres_store(peers, n, fresh())
            samples["pg"].append(sample)
            for key, durability in (("sqlite-normal", "normal"), ("sqlite-full", "full")):
                sqlite_sample, tx_per_workflow = bench_ours(
                    peers,
                    n,
                    durability,  # type: ignore[arg-type]
                    args.dir,
                    coalesce=True,
                )
                samples[key].append(sqlite_sample)
            samples["lg-pg"].append(bench_langgraph_postgres(peers, n, fresh(), None))
            samples["lg-pg-sync"].append(bench_langgraph_postgres(peers, n, fresh(), "sync"))
        flush_us = smallest_commit_us(fresh())

    def rate(key: str) -> float:
        return max(s.decisions / s.seconds for s in samples[key])

    print(
        f"{n} workflows per run, best of {args.repeat}; {settings}; Unix socket; SQLite under "
        f"{args.dir}; {os.cpu_count()} CPUs, load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    print(f"{'engine':46s} {'decisions/s':>11s} {'worst':>6s} {'us/dec':>7s}")
    for key, name in names.items():
        r = rate(key)
        worst = min(s.decisions / s.seconds for s in samples[key])
        print(f"{name:46s} {r:11.0f} {worst:6.0f} {1e6 / r:7.1f}")
    print(
        "like for like on PostgreSQL (both commit before acting, same server): PostgresStore "
        f"vs PostgresSaver sync {rate('pg') / rate('lg-pg-sync'):.2f}x (target >= 5x); vs "
        f"PostgresSaver as peers.py (async) {rate('pg') / rate('lg-pg'):.2f}x. Ours counts "
        f"{samples['pg'][0].decisions // n} decisions per workflow, langgraph "
        f"{peers.DECISIONS_PER_WORKFLOW}"
    )
    per_decision = tx_per_workflow / (samples["pg"][0].decisions // n)
    cap = 1e6 / (flush_us * per_decision)
    print(
        f"the floor: the smallest commit on this server (one 600-byte row, its own "
        f"transaction) takes {flush_us:.0f} us, a WAL flush; ours make {per_decision:.2f} "
        f"write transactions per decision ({tx_per_workflow:.0f} per workflow), so flushes "
        f"alone cap PostgresStore at {cap:.0f} decisions/s, "
        f"{cap / rate('lg-pg-sync'):.2f}x PostgresSaver sync; 5x would leave "
        f"{1e6 / (5 * rate('lg-pg-sync')):.0f} us per decision"
    )

    if args.in_flight:
        with databases(args.url, args.synchronous_commit) as fresh:
            in_flight_report(
                "ours: tasks on one event loop awaiting one AsyncStore on PostgresStore, "
                "commits grouped; langgraph: threads on PostgresSaver over a pool of as many "
                "connections, durability=sync; both commit before acting, same server",
                args.in_flight,
                args.repeat,
                lambda k: bench_postgres_in_flight(peers, n, k, fresh()),
                lambda k: bench_langgraph_postgres_threads(peers, n, k, fresh()),
            )


if __name__ == "__main__":
    main()
