"""`connect_retrying`: a refusal is tried again within the window; anything else, or a
refusal past the window, reaches the caller."""

from __future__ import annotations

import asyncio

import pytest

from strangler_proxy.reconnect import connect_retrying


def _run(outcomes: list[object], window_s: float) -> tuple[object, int, int]:
    calls = retries = 0

    async def connect() -> object:
        nonlocal calls
        outcome = outcomes[min(calls, len(outcomes) - 1)]
        calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def counted() -> None:
        nonlocal retries
        retries += 1

    result = asyncio.run(
        connect_retrying(
            connect, window_s, lambda e: isinstance(e, ConnectionRefusedError), counted
        )
    )
    return result, calls, retries


def test_refusals_are_tried_again_until_the_upstream_answers() -> None:
    refused = ConnectionRefusedError()
    assert _run([refused, refused, "conn"], window_s=5) == ("conn", 3, 2)


def test_other_errors_and_a_zero_window_are_not_retried() -> None:
    with pytest.raises(ConnectionResetError):
        _run([ConnectionResetError(), "conn"], window_s=5)
    with pytest.raises(ConnectionRefusedError):
        _run([ConnectionRefusedError(), "conn"], window_s=0)


def test_a_refusal_past_the_window_reaches_the_caller() -> None:
    with pytest.raises(ConnectionRefusedError):
        _run([ConnectionRefusedError()], window_s=0.2)  # refused for ever
