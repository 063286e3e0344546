"""CPU per LLM call in the calling process: our adapter beside the ``openai`` client's calls.

A worker's CPU per workflow is mostly its LLM calls (``bench/workers.py``), so this times
one call's CPU in the process that makes it, four ways, each on the same ``AsyncOpenAI``
client (aiohttp transport, as ``make_client`` builds it):

- ``OpenAIChatModel.complete``: our adapter (retry bookkeeping, the request's body, the
  answer read by its own narrow model of a chat completion);
- ``client.chat.completions.create``: the call as the ``openai`` documentation writes it;
- ``client.post(..., cast_to=ChatCompletion)``: the same request without ``create``'s typed
  parameters, the answer built as the client's ``ChatCompletion``;
- ``client.post(..., cast_to=bytes)``: the same, the answer left as bytes: the client's
  request path alone, which our adapter cannot go below.

The answers come from the test suite's fake OpenAI-compatible server in a process of its own
(``bench/workers.py --serve``, no delay), so its CPU is not counted. Each way makes
``--calls`` calls, ``--batch`` at a time, in ``--rounds`` interleaved rounds (drift on a
shared machine hits all alike); CPU is ``time.process_time``, printed as the median and the
best round, and as a ratio to ``create``.

    python -m bench.llm_client [--calls 300] [--batch 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from bench.workers import ROOT, FakeServer
from orchestrator.llm.openai_adapter.adapter import OpenAIChatModel
from orchestrator.llm.openai_adapter.client import make_client
from orchestrator.llm.protocol import LLMRequest, Message
from orchestrator.logsetup import configure_logging

MODEL = "fake-model"
SYSTEM = "You review implementation plans for tabular preprocessing code."
USER = "Plan: fill missing values in each column, then test it. " * 40


def ways(client: AsyncOpenAI) -> dict[str, Callable[[], Awaitable[object]]]:
    """The ways of making one call, by the name printed."""
    adapter = OpenAIChatModel(client, model=MODEL)
    request = LLMRequest(messages=(Message("system", SYSTEM), Message("user", USER)))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    body = {"model": MODEL, "messages": messages, "temperature": 0.0, "max_tokens": 512}

    async def ours() -> object:
        return await adapter.complete(request)

    async def create() -> object:
        return await client.chat.completions.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            temperature=0.0,
            max_tokens=512,
        )

    async def post() -> object:
        return await client.post("/chat/completions", cast_to=ChatCompletion, body=body)

    async def raw() -> object:
        return await client.post("/chat/completions", cast_to=bytes, body=body)

    return {
        "OpenAIChatModel.complete (ours)": ours,
        "client.chat.completions.create": create,
        "client.post(cast_to=ChatCompletion)": post,
        "client.post(cast_to=bytes)": raw,
    }


async def cpu_per_call(call: Callable[[], Awaitable[object]], calls: int, batch: int) -> float:
    """Milliseconds of this process's CPU per call, ``batch`` calls in flight at a time."""
    start = time.process_time()
    for _ in range(calls // batch):
        await asyncio.gather(*(call() for _ in range(batch)))
    return (time.process_time() - start) / (calls // batch * batch) * 1000


async def measure(base_url: str, calls: int, batch: int, rounds: int) -> None:
    """Time every way over interleaved rounds and print the figures."""
    client = make_client(base_url, "sk-bench", timeout_s=30.0)
    try:
        table = ways(client)
        for call in table.values():  # warm: connections, imports, caches
            await cpu_per_call(call, 2 * batch, batch)
        ms: dict[str, list[float]] = {name: [] for name in table}
        for _ in range(rounds):
            for name, call in table.items():
                ms[name].append(await cpu_per_call(call, calls, batch))
    finally:
        await client.close()
    base = statistics.median(ms["client.chat.completions.create"])
    print(
        f"CPU per call in the calling process, {calls} calls x {rounds} rounds, {batch} in "
        f"flight; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  {'way':<38} {'median':>8} {'best':>8}  x create")
    for name, values in ms.items():
        med = statistics.median(values)
        print(f"  {name:<38} {med:6.2f} ms {min(values):5.2f} ms  {med / base:5.2f}")


def main() -> None:
    """Start the fake server, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = FakeServer(0.0, env)
    try:
        asyncio.run(measure(server.base_url, args.calls, args.batch, args.rounds))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
