"""Throughput of 1, 2 and 4 worker processes on one store, and the orchestrator's overhead.

Each workflow runs to its plan gate: the planner and the plan validator, one LLM call each,
answered by the scripted world of the test suite on a loopback OpenAI-compatible server
after ``--latency`` seconds (default 1.0). Workers are real ``orchestrator worker``
processes; they are started and registered before the workflows are submitted, and the
clock runs from the first submission until every workflow is parked at its gate.

    scaling(n) = throughput(n workers) / (n * throughput(1 worker))

With each ``--in-flight`` count of workflows (default 100, 250 and 1,000) stored first
and made ready all at once for 4 workers (started, registered and idle, so their start-up
is not inside any workflow's span), the orchestrator's own share of each workflow's wall
time is

    own share = (span - LLM latency) / span

where span runs from the workflow's first ledger entry to its last (the gate decision) and
the LLM latency is the two simulated calls; the scaling runs print it too. SQLite always;
PostgreSQL when a server can be started as the tests do (``tests/support/postgres.py``,
durable settings).

CPU is printed beside it, since on a small machine the orchestrator's share is mostly
waiting for a core: the workers' CPU per workflow (with and without their start-up, which
is measured on its own: one worker started and stopped on an empty queue), and the fake
server's CPU per request, and how busy the machine's cores were while the workflows ran
(the workers' CPU without their start-up, and the server's, over wall time and cores):
near 100 % the spans are queueing for a core. The fake server runs in a process of its own
(``--serve``), so its CPU is its own and not the bench's polling; it shares the cores with
the workers, and keeps connections alive as llama.cpp's server does, so no call pays a TCP
connect the real server would not ask for.

    python -m bench.workers [--latency 1.0] [--per-worker 16] [--concurrency 4]
                            [--in-flight 100 250 1000] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the scripted world and the server live with the tests

from orchestrator.composition import open_store  # noqa: E402
from orchestrator.logsetup import configure_logging  # noqa: E402
from orchestrator.running.updates import new_workflow  # noqa: E402
from orchestrator.running.worker import submit  # noqa: E402
from state.clock import SystemClock  # noqa: E402
from state.config import Coordinator, WorkflowConfig  # noqa: E402
from state.queue import QueueStatus, WorkQueue, work_queue  # noqa: E402
from state.store import Store  # noqa: E402

from support.fake_openai import Content, Delay, FakeOpenAIServer, Reply  # noqa: E402
from support.postgres import PostgresServer, unavailable_reason  # noqa: E402
from support.world import GOOD_PLAN, World  # noqa: E402

CONFIG = WorkflowConfig(coordinator=Coordinator.PROGRAMMATIC)
LLM_CALLS = 2  # planner, plan validator


class SlowWorld:
    """The scripted world, every answer after ``latency`` seconds."""

    def __init__(self, latency: float) -> None:
        self.world = World(plan_reports=[GOOD_PLAN])
        self.latency = latency

    def __call__(self, body: dict[str, Any]) -> Reply:
        return Delay(self.latency, Content(self.world.http_responder(body).text))


def serve_fake(latency: float) -> None:
    """``--serve``: the fake server; prints its URL, then its CPU for each line read."""
    # A thousand clients connect at once: the standard library's backlog of 5 would make
    # them retry their connects, which is the test server's limit, not ours.
    ThreadingHTTPServer.request_queue_size = 4096
    with FakeOpenAIServer(responder=SlowWorld(latency), keep_alive=True) as server:
        print(server.base_url, flush=True)
        for _line in sys.stdin:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            print(f"{usage.ru_utime + usage.ru_stime} {len(server.requests)}", flush=True)


class FakeServer:
    """The fake server in its own process (``serve_fake``), asked for its CPU as it runs."""

    def __init__(self, latency: float, env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "bench.workers", "--serve", str(latency)]
        self._proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        self.base_url = self._proc.stdout.readline().strip()
        if not self.base_url:
            self._proc.wait()
            raise RuntimeError(f"the fake server did not start (exit {self._proc.returncode})")

    def usage(self) -> tuple[float, int]:
        """The server's CPU seconds so far and the requests it has answered."""
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write("usage\n")
        self._proc.stdin.flush()
        cpu, requests = self._proc.stdout.readline().split()
        return float(cpu), int(requests)

    def stop(self) -> None:
        """Stop the server (its stdin closed ends it)."""
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()


@contextmanager
def fake_server(latency: float, env: dict[str, str]) -> Iterator[FakeServer]:
    """The fake server in its own process, stopped on exit."""
    server = FakeServer(latency, env)
    try:
        yield server
    finally:
        server.stop()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def startup_cpu(url: str, env: dict[str, str]) -> float:
    """CPU seconds of one worker started and stopped on an empty queue (its start-up)."""
    with open_store(url) as store:
        queue = _queue(store)
        before = _children_cpu()
        procs = _start_workers(url, env, 1, 1)
        try:
            while len(queue.workers()) < 1:
                time.sleep(0.05)
        finally:
            _stop(procs)
        for info in queue.workers():
            queue.remove_worker(info.beat.worker_id)
    return _children_cpu() - before


def _queue(store: Store) -> WorkQueue:
    queue = work_queue(store)
    assert queue is not None
    return queue


def _start_workers(url: str, env: dict[str, str], n: int, concurrency: int) -> list[Any]:
    cmd = [sys.executable, "-m", "orchestrator", "worker", "-q", "-c", str(concurrency)]
    cmd += ["--poll", "0.2", "--heartbeat", "2", "--store", url]
    return [
        subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(n)
    ]


def _stop(procs: list[Any]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _submit_all(
    store: Store, workspaces: Path, tag: str, count: int, *, ready: bool = True
) -> list[str]:
    """Submit ``count`` workflows; with ``ready`` False they are stored but not yet queued."""
    clock = SystemClock()
    ids = []
    for i in range(count):
        wid = f"wf-{workspaces.name}-{tag}-{i}"
        ws = workspaces / wid
        ws.mkdir(parents=True)
        if ready:
            submit(store, "fill missing values", CONFIG, workflow_id=wid, workspace=ws,
                   clock=clock)  # fmt: skip
        else:
            store.create(new_workflow(wid, "fill missing values", str(ws), clock.now()), CONFIG)
        ids.append(wid)
    return ids


def peak_in_flight(intervals: list[tuple[float, float]]) -> int:
    """The most workflows whose (first entry, last entry) intervals overlapped at once."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def run_pool(
    url: str,
    env: dict[str, str],
    workspaces: Path,
    n: int,
    concurrency: int,
    count: int,
    *,
    queued_first: bool = False,
) -> tuple[float, list[float], int]:
    """Wall time for ``count`` workflows on ``n`` workers, each workflow's span, the peak.

    The workers start first (and register, their start-up done) and the clock with the
    first submission; with ``queued_first`` every workflow is stored before, and all are
    made ready at once, so that all can be in flight together, the clock starting then.
    The peak is the most workflows in flight at one time.
    """
    with open_store(url) as store:
        queue = _queue(store)
        tag = f"{n}q" if queued_first else str(n)
        ids = _submit_all(store, workspaces, tag, count, ready=False) if queued_first else []
        procs = _start_workers(url, env, n, concurrency)
        try:
            while len(queue.workers()) < n:
                time.sleep(0.1)
            started = time.perf_counter()
            if queued_first:
                for wid in ids:
                    queue.enqueue(wid)
            else:
                ids = _submit_all(store, workspaces, tag, count)
            mine = set(ids)
            while True:
                entries = [e for e in queue.queued() if e.workflow_id in mine]
                if all(e.status is QueueStatus.PARKED for e in entries):
                    break
                time.sleep(0.2)
            wall = time.perf_counter() - started
        finally:
            _stop(procs)
        intervals = []
        for wid in ids:
            ledger = store.ledger(wid)
            intervals.append(
                (ledger[0].recorded_at.timestamp(), ledger[-1].recorded_at.timestamp())
            )
    return wall, [last - first for first, last in intervals], peak_in_flight(intervals)


def _shares(spans: list[float], floor: float) -> str:
    """The orchestrator's own share of the spans: mean, median and 90th percentile."""
    shares = sorted((s - floor) / s for s in spans if s > 0)
    mean = sum(shares) / len(shares)
    return (
        f"own share mean {mean:.1%}, median {shares[len(shares) // 2]:.1%}, "
        f"p90 {shares[int(len(shares) * 0.9)]:.1%} (span {min(spans):.2f}-{max(spans):.2f}s)"
    )


def bench_backend(
    name: str,
    url: str,
    env: dict[str, str],
    tmp: Path,
    server: FakeServer,
    args: argparse.Namespace,
) -> None:
    """Print throughput and scaling on one backend, then the overhead at ``--in-flight``."""
    base: float | None = None
    floor = LLM_CALLS * args.latency
    for n in (1, 2, 4):
        count = args.per_worker * n
        wall, spans, _ = run_pool(url, env, tmp / f"ws-{name}", n, args.concurrency, count)
        rate = count / wall
        base = base or rate
        scaling = rate / (n * base)
        print(
            f"{name:8} {n} worker(s) x {args.concurrency}: {count:4} workflows in {wall:6.2f}s "
            f"= {rate:6.2f}/s; scaling per added worker {scaling:.2f}; {_shares(spans, floor)}",
            flush=True,
        )
    start_cpu = startup_cpu(url, env)
    for in_flight in args.in_flight:
        in_flight_run(name, url, env, tmp, server, in_flight, start_cpu, floor)


def in_flight_run(
    name: str,
    url: str,
    env: dict[str, str],
    tmp: Path,
    server: FakeServer,
    in_flight: int,
    start_cpu: float,
    floor: float,
) -> None:
    """``in_flight`` workflows made ready at once for 4 idle workers: own share, CPU, cores."""
    per = max(1, in_flight // 4)
    before, (server_before, requests_before) = _children_cpu(), server.usage()
    ws = tmp / f"ws-{name}-flight-{in_flight}"
    wall, spans, peak = run_pool(url, env, ws, 4, per, per * 4, queued_first=True)
    cpu = _children_cpu() - before
    server_cpu, requests = server.usage()
    server_cpu, requests = server_cpu - server_before, requests - requests_before
    count = per * 4
    cores = os.cpu_count() or 1
    print(
        f"{name:8} {count} made ready at once for 4 workers x {per}: all parked {wall:.2f}s "
        f"later, {peak} in flight at the peak; {_shares(spans, floor)}",
        flush=True,
    )
    print(
        f"{name:8} workers' CPU {cpu:.1f}s = {cpu / count * 1000:.1f} ms per workflow "
        f"({(cpu - 4 * start_cpu) / count * 1000:.1f} ms without the start-up of "
        f"{start_cpu:.2f}s per worker); fake server's CPU {server_cpu:.1f}s = "
        f"{server_cpu / max(1, requests) * 1000:.1f} ms per request ({requests} requests); "
        f"the {cores} cores {(cpu - 4 * start_cpu + server_cpu) / (wall * cores):.0%} busy "
        "while they ran",
        flush=True,
    )


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--per-worker", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[100, 250, 1000])
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)  # the fake server
    args = parser.parse_args()
    if args.serve is not None:
        serve_fake(args.serve)
        return
    configure_logging("console", "WARNING")
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmpdir:
        tmp = Path(tmpdir)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")},
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_MODEL": "fake-model",
            "PYTHONPATH": str(ROOT),
        }
        with fake_server(args.latency, env) as server:
            env["OPENAI_BASE_URL"] = server.base_url
            print(f"LLM latency {args.latency:.1f}s per call, {LLM_CALLS} calls per workflow")
            bench_backend("sqlite", f"sqlite://{tmp / 'sqlite'}", env, tmp, server, args)
            reason = unavailable_reason()
            if args.skip_postgres or reason is not None:
                print(f"postgres skipped: {reason or '--skip-postgres'}")
                return
            pg = PostgresServer(durable=True)
            try:
                pg.start()
                bench_backend("postgres", pg.url(), env, tmp, server, args)
            finally:
                pg.stop()


if __name__ == "__main__":
    main()
