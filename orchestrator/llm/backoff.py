"""Exponential backoff with jitter, shared by the adapter's retries and step retries."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]


def backoff_delay(failed: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """The wait after ``failed`` failed attempts: ``base * 2**(failed-1)``, capped, half jittered.

    The upper half of the full delay is drawn at random so that many clients that failed
    together do not all come back at the same instant, while none comes back too early.

    Args:
        failed: how many attempts have failed so far (1 after the first failure).
        base_s: the delay after the first failure, before jitter.
        cap_s: the longest delay.
        rng: the jitter source.

    Returns:
        Seconds to wait, between half the full delay and the full delay.
    """
    full = min(cap_s, base_s * 2.0 ** (max(failed, 1) - 1))
    return full / 2 + rng.uniform(0, full / 2)
