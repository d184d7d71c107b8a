"""Route store (SQLite through SQLAlchemy) and the guarded route-changing service."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from strangler_proxy.routes import RouteError, build_route
from strangler_proxy.service import (
    ChangeRefused,
    RouteChange,
    RouteService,
    UnknownServiceError,
    readiness_guard,
)
from strangler_proxy.store import RouteStore, UnknownRouteError


@pytest.fixture
def store(tmp_path: Path) -> RouteStore:
    store = RouteStore.from_url(f"sqlite:///{tmp_path / 'routes.db'}")
    store.sync_services({"monolith": "http://127.0.0.1:1", "catalog": "http://127.0.0.1:2"})
    store.declare(
        [
            build_route("GET", "/products/<int:id>", "catalog", "monolith"),
            build_route("PATCH", "/products/<int:id>", "catalog", "monolith"),
        ]
    )
    yield store
    store.close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_declaring_routes_bumps_the_version_and_keeps_existing_modes(store: RouteStore) -> None:
    version = store.version()
    store.apply(
        [build_route("GET", "/products/<int:id>", "catalog", "shadow")], actor="t", reason="r"
    )
    assert store.version() == version + 1
    store.declare([build_route("GET", "/products/<int:id>", "catalog", "monolith")])
    assert store.version() == version + 1
    _, routes = store.load()
    assert {r.key: str(r.mode) for r in routes}[("GET", "/products/<int:id>")] == "shadow"


def test_every_change_is_audited_with_old_new_actor_and_reason(store: RouteStore) -> None:
    store.apply(
        [build_route("GET", "/products/<int:id>", "catalog", "canary:5")],
        actor="alice",
        reason="first canary",
    )
    entry = store.history(1)[0]
    assert (entry.method, entry.path, entry.actor, entry.reason) == (
        "GET",
        "/products/<int:id>",
        "alice",
        "first canary",
    )
    assert entry.old is not None and entry.old["mode"] == "monolith"
    assert entry.new is not None and entry.new["mode"] == "canary:5"


def test_a_change_touching_an_unknown_route_changes_nothing(store: RouteStore) -> None:
    before = store.load()
    with pytest.raises(UnknownRouteError):
        store.apply(
            [
                build_route("GET", "/products/<int:id>", "catalog", "extracted"),
                build_route("GET", "/nope", "catalog", "extracted"),
            ],
            actor="t",
            reason="r",
        )
    assert store.load() == before


def test_reset_sends_every_route_back_to_the_monolith(store: RouteStore) -> None:
    store.apply(
        [build_route("GET", "/products/<int:id>", "catalog", "extracted")], actor="t", reason="r"
    )
    store.reset(actor="t", reason="rollback")
    _, routes = store.load()
    assert {str(r.mode) for r in routes} == {"monolith"}
    assert store.history(1)[0].reason == "rollback"


def _writes_stay_with_the_service(change: RouteChange) -> str | None:
    """Like the playbook's ownership guard: the service owns the writes of its tables."""
    if change.force or change.new.method == "GET" or change.new.mode.kind != "monolith":
        return None
    return f"catalog owns the writes of products: {change.new.method} stays"


def test_reset_goes_through_the_guards_and_moves_nothing_when_one_refuses(
    store: RouteStore,
) -> None:
    service = RouteService(store, [_writes_stay_with_the_service])
    service.set_route("GET,PATCH", "/products/<int:id>", "extracted", actor="t")
    before = store.load()
    with pytest.raises(ChangeRefused, match="owns the writes"):
        service.reset(actor="ops", reason="panic")
    assert store.load() == before  # not even the reads moved: one version or nothing
    version = service.reset(actor="ops", reason="I know", force=True)
    _, routes = store.load()
    assert version == before[0] + 1 and {str(r.mode) for r in routes} == {"monolith"}
    assert store.history(1)[0].actor == "ops" and store.history(1)[0].reason == "I know"


def test_service_sets_several_methods_atomically(store: RouteStore) -> None:
    service = RouteService(store)
    result = service.set_route(
        "GET,PATCH", "/products/<int:id>", "shadow", actor="bob", reason="shadow both"
    )
    assert [c.new.method for c in result.changes] == ["GET", "PATCH"]
    _, routes = store.load()
    assert {str(r.mode) for r in routes} == {"shadow"}


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("GET", "/orders/<int:id>", "extracted"), {}, UnknownRouteError, "no route is declared"),
        (
            ("GET", "/products/<int:id>", "extracted"),
            {"service": "billing"},
            UnknownServiceError,
            "unknown service 'billing'",
        ),
        (("GET", "/products/<int:id>", "canary:150"), {}, RouteError, "between 0 and 100"),
        (
            ("GET", "/products/<int:id>", "extracted"),
            {"service": "monolith"},
            RouteError,
            "needs --service",
        ),
        (("FETCH", "/products/<int:id>", "extracted"), {}, RouteError, "unknown HTTP method"),
    ],
)
def test_bad_changes_are_refused_and_nothing_changes(
    store: RouteStore,
    args: tuple[str, str, str],
    kwargs: dict[str, str],
    error: type[Exception],
    message: str,
) -> None:
    before = (store.load(), len(store.history(100)))
    with pytest.raises(error, match=message):
        RouteService(store).set_route(*args, **kwargs)
    assert (store.load(), len(store.history(100))) == before


def test_a_guard_can_refuse_a_change_with_a_reason(store: RouteStore) -> None:
    seen: list[RouteChange] = []

    def parity_guard(change: RouteChange) -> str | None:
        seen.append(change)
        return "parity below 99.9%" if change.new.mode.kind == "extracted" else None

    service = RouteService(store, [parity_guard])
    with pytest.raises(ChangeRefused, match="parity below"):
        service.set_route("GET", "/products/<int:id>", "extracted", actor="t")
    service.set_route("GET", "/products/<int:id>", "shadow", actor="t")
    assert [c.new.mode.kind for c in seen] == ["extracted", "shadow"]
    assert {str(r.mode) for r in store.load()[1] if r.method == "GET"} == {"shadow"}


def test_readiness_guard_refuses_canary_for_an_unready_service_unless_forced(
    store: RouteStore,
) -> None:
    guard = readiness_guard(
        {"monolith": "http://127.0.0.1:1", "catalog": _closed_port_url()}, timeout=1.0
    )
    service = RouteService(store, [guard])
    with pytest.raises(ChangeRefused, match="not ready"):
        service.set_route("GET", "/products/<int:id>", "canary:10", actor="t")
    service.set_route("GET", "/products/<int:id>", "shadow", actor="t")  # not guarded
    result = service.set_route("GET", "/products/<int:id>", "canary:10", actor="t", force=True)
    assert str(result.changes[0].new.mode) == "canary:10"


class _ReadyOnOnePath(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200 if self.path == "/ready-for-traffic" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def test_readiness_guard_asks_the_path_the_manifest_names_for_the_service(
    store: RouteStore,
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ReadyOnOnePath)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        services = {"monolith": "http://127.0.0.1:1", "catalog": url}
        refusing = RouteService(store, [readiness_guard(services, timeout=1.0)])
        with pytest.raises(ChangeRefused, match="/readyz returned 404"):
            refusing.set_route("GET", "/products/<int:id>", "canary:10", actor="t")
        guard = readiness_guard(services, timeout=1.0, paths={"catalog": "/ready-for-traffic"})
        result = RouteService(store, [guard]).set_route(
            "GET", "/products/<int:id>", "canary:10", actor="t"
        )
        assert str(result.changes[0].new.mode) == "canary:10"
    finally:
        server.shutdown()
        server.server_close()
