"""Signed session cookies, revocation, CSRF tokens and the sign-in brake."""

from __future__ import annotations

import pytest

from strangler_proxy.dashboard.sessions import LoginThrottle, SessionManager


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_an_issued_cookie_verifies_to_the_same_session_and_csrf_token() -> None:
    manager = SessionManager(b"k" * 32)
    cookie, session = manager.issue()
    again = manager.verify(cookie)
    assert again is not None
    assert again.sid == session.sid and again.csrf == session.csrf
    assert manager.check_csrf(again, session.csrf)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # signature changed
        lambda c: ("f" if c[0] != "f" else "g") + c[1:],  # payload changed
        lambda c: c.replace(".", ""),  # no separator
        lambda c: c + ".x",  # two separators
        lambda c: c.split(".")[0] + ".!!!",  # not base64
        lambda c: "",
    ],
)
def test_a_tampered_cookie_is_not_a_session(mangle) -> None:  # type: ignore[no-untyped-def]
    manager = SessionManager(b"k" * 32)
    cookie, _ = manager.issue()
    assert manager.verify(mangle(cookie)) is None


def test_a_cookie_signed_with_another_secret_is_refused() -> None:
    cookie, _ = SessionManager(b"a" * 32).issue()
    assert SessionManager(b"b" * 32).verify(cookie) is None


def test_sessions_expire_and_signing_out_ends_them_even_with_a_kept_cookie() -> None:
    clock = Clock()
    manager = SessionManager(b"k" * 32, ttl=60, clock=clock)
    cookie, session = manager.issue()
    clock.now += 59
    assert manager.verify(cookie) is not None
    clock.now += 2
    assert manager.verify(cookie) is None
    cookie, session = manager.issue()
    manager.revoke(session.sid)
    assert manager.verify(cookie) is None


def test_csrf_tokens_are_per_session_and_empty_tokens_never_pass() -> None:
    manager = SessionManager(b"k" * 32)
    _, one = manager.issue()
    _, two = manager.issue()
    assert one.csrf != two.csrf
    assert not manager.check_csrf(one, two.csrf)
    assert not manager.check_csrf(one, "")
    assert not manager.check_csrf(one, None)


def test_the_session_list_is_bounded_and_drops_the_oldest() -> None:
    manager = SessionManager(b"k" * 32, max_sessions=3)
    cookies = [manager.issue()[0] for _ in range(4)]
    assert manager.active == 3
    assert manager.verify(cookies[0]) is None
    assert all(manager.verify(c) is not None for c in cookies[1:])


def test_weak_secrets_and_bad_ttls_are_rejected() -> None:
    with pytest.raises(ValueError, match="secret"):
        SessionManager(b"short")
    with pytest.raises(ValueError, match="ttl"):
        SessionManager(b"k" * 32, ttl=0)


def test_the_throttle_refuses_after_too_many_failures_and_recovers_after_the_window() -> None:
    clock = Clock(0.0)
    throttle = LoginThrottle(limit=3, window=10, clock=clock)
    for _ in range(3):
        assert throttle.retry_after() == 0
        throttle.failed()
    assert throttle.retry_after() == pytest.approx(10)
    clock.now = 10.5
    assert throttle.retry_after() == 0
    throttle.failed()
    throttle.succeeded()
    assert throttle.retry_after() == 0
