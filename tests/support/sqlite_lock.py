"""Another process holding a SQLite database's write lock, for as long as a test wants."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

_LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@asynccontextmanager
async def write_lock_held(db: Path) -> AsyncIterator[asyncio.Event]:
    """A process holds ``db``'s write lock until the yielded event is set (or the block ends).

    Writers of the test's own process wait on SQLite's busy timeout meanwhile, as they would
    behind another process's long transaction or a slow disk.
    """
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LOCK_HOLDER,
        str(db),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None and holder.stdout is not None
    release = asyncio.Event()

    async def let_go() -> None:
        await release.wait()
        assert holder.stdin is not None
        holder.stdin.write(b"\n")
        await holder.stdin.drain()

    letting_go = asyncio.create_task(let_go())
    try:
        assert (await holder.stdout.readline()).strip() == b"locked"
        yield release
    finally:
        release.set()
        await letting_go
        await holder.wait()
