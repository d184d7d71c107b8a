"""Change-form parsing and HTML rendering (everything escaped)."""

from __future__ import annotations

import pytest

from strangler_proxy.dashboard.render import render, static_file
from strangler_proxy.dashboard.state import ChangeRejected, parse_change


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"endpoint": "GET /products", "mode": "shadow"}, ("GET", "/products", "shadow", False)),
        (
            {"endpoint": "get /p/<int:id>", "mode": "canary", "percent": "12.5", "force": "on"},
            ("GET", "/p/<int:id>", "canary:12.5", True),
        ),
        (
            {"endpoint": "GET /p", "mode": "extracted", "force": True},
            ("GET", "/p", "extracted", True),
        ),
    ],
)
def test_valid_change_forms_are_parsed(data, expected) -> None:  # type: ignore[no-untyped-def]
    change = parse_change(data)
    assert (change.method, change.path, change.mode, change.force) == expected


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"mode": "shadow"}, "endpoint"),
        ({"endpoint": "GET", "mode": "shadow"}, "endpoint"),
        ({"endpoint": "GET /p", "mode": "sideways"}, "mode"),
        ({"endpoint": "GET /p", "mode": "canary"}, "percentage"),
        ({"endpoint": "GET /p", "mode": "shadow", "reason": "x" * 501}, "reason"),
        ({"endpoint": "GET /p", "mode": "shadow", "force": 3}, "force"),
        ({"endpoint": "GET /p", "mode": "shadow", "service": 5}, "service"),
    ],
)
def test_bad_change_forms_are_refused_naming_the_field(data, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ChangeRejected) as info:
        parse_change(data)
    assert info.value.status == 422 and field in info.value.message


def _state(**overrides: object) -> dict[str, object]:
    state: dict[str, object] = {
        "generated_at": 1_700_000_000.0,
        "poll_ms": 1000,
        "version": 3,
        "active_version": 3,
        "routes": [],
        "services": [],
        "parity": [],
        "cdc": [],
        "audit": [],
        "shadow": {"total": 0, "pairs": []},
        "counters": {},
        "problems": [],
        "modes": ["monolith", "shadow", "canary", "extracted"],
        "extracted_services": [],
    }
    state.update(overrides)
    return state


def test_every_value_on_the_overview_is_html_escaped() -> None:
    evil = '<script>alert("x")</script>'
    html = render(
        "dashboard.html",
        prefix="/dashboard",
        csrf='tok"><b>',
        state=_state(
            parity=[
                {
                    "endpoint": evil,
                    "matches": 1,
                    "mismatches": 1,
                    "noise": 0,
                    "errors": 0,
                    "compared": 2,
                    "agreement": 0.5,
                    "url": "/dashboard/mismatches?endpoint=x",
                }
            ],
            audit=[
                {
                    "id": 1,
                    "at": 1_700_000_000.0,
                    "version": 2,
                    "actor": evil,
                    "endpoint": "GET /p",
                    "old_mode": "monolith",
                    "new_mode": "shadow",
                    "old_service": "catalog",
                    "new_service": "catalog",
                    "reason": evil,
                }
            ],
            problems=[evil],
        ),
        result={"kind": "error", "title": "Refused:", "message": evil},
        form=None,
    )
    assert "<script>alert" not in html
    # parity endpoint (twice: cell and link text), actor, reason, problem, result message
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") == 6
    assert 'content="tok&#34;&gt;&lt;b&gt;"' in html
    assert '<script src="/dashboard/static/dashboard.js" defer></script>' in html


def test_only_the_shipped_static_files_are_served() -> None:
    js = static_file("dashboard.js")
    assert js is not None and js[1] == "application/javascript" and b"textContent" in js[0]
    assert static_file("../render.py") is None
    assert static_file("dashboard.py") is None
