"""Waiting out an upstream that refuses connections: an app restarting (the `kit up` watchdog
brings a crashed gunicorn back within seconds) refuses connections meanwhile.

A refused connection carried no byte of the request, so any method, a POST too, may be tried
again without risk of doing it twice. Both request paths connect through `connect_retrying`
(one policy); each says which of its errors is a refusal. Anything else — a reset, a
timeout, an error after the request went out — is never retried here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_DELAY_S = 0.05
MAX_DELAY_S = 0.5


async def connect_retrying(
    connect: Callable[[], Awaitable[T]],
    window_s: float,
    refused: Callable[[BaseException], bool],
    on_retry: Callable[[], None] = lambda: None,
) -> T:
    """`connect()`, tried again (backing off from 50 ms to 0.5 s) while it fails with a refusal,
    for at most `window_s` seconds from the first refusal; then the refusal is raised."""
    deadline: float | None = None
    delay = FIRST_DELAY_S
    while True:
        try:
            return await connect()
        except Exception as exc:
            if window_s <= 0 or not refused(exc):
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + window_s
            if now + delay > deadline:
                raise
            on_retry()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
