"""The peer engines every benchmark times beside ours (see ``bench/peers.py``)."""

from __future__ import annotations

from types import ModuleType


def load_peers() -> ModuleType:
    """The module with the peers' scripted trace and their ``bench_*`` functions."""
    from bench import peers  # noqa: PLC0415 -- the peers import LangGraph and Burr lazily

    return peers
