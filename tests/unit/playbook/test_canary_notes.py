"""`kit status` warns when a canary cannot split its traffic: statically (no client key) and
from the split the running proxy observed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

from kit.playbook.status import canary_notes, collect_status, observed_canary_notes
from strangler_proxy.stats import CanarySplit, split_row

MODES = {("GET", "/notes/<int:id>"): "canary:10", ("GET", "/notes"): "monolith"}


def test_a_canary_without_a_client_key_is_named_with_the_setting_that_fixes_it() -> None:
    (note,) = canary_notes(None, MODES)
    assert "GET /notes/<int:id> (canary:10)" in note and "GET /notes " not in note
    assert 'client_key = { hash_header = "Authorization" }' in note


def test_no_note_with_a_client_key_or_without_a_canary() -> None:
    assert canary_notes({"hash_header": "Authorization"}, MODES) == []
    assert canary_notes(None, {("GET", "/notes"): "extracted"}) == []


def _row(to_service: int, to_monolith: int, buckets: range, by_address: int) -> dict[str, Any]:
    """A canary split as the proxy's /admin/stats reports it (its judge's warning included)."""
    split = CanarySplit(None)
    split.add(to_service, to_monolith, by_address, buckets)
    return split_row("/notes/<int:id>", 1000, split)


ONE_CLIENT = _row(0, 812, range(1), by_address=812)
SPREAD = _row(80, 732, range(64), by_address=0)


def test_an_observed_canary_that_saw_one_client_key_is_noted_with_its_counts() -> None:
    (note,) = observed_canary_notes([ONE_CLIENT], MODES)
    assert note.startswith("canary /notes/<int:id> (canary:10) as observed: ")
    assert "all 812 requests came from 1 client key: the canary cannot split them" in note


def test_a_well_spread_canary_and_splits_of_earlier_stages_are_not_noted() -> None:
    assert observed_canary_notes([SPREAD], MODES) == []
    earlier = ONE_CLIENT | {"share": 5}
    assert observed_canary_notes([earlier], MODES) == []
    assert observed_canary_notes([ONE_CLIENT], {("GET", "/notes/<int:id>"): "extracted"}) == []


def _source(proxy_stats: Callable[[], Mapping[str, Any]]) -> SimpleNamespace:
    m = SimpleNamespace(services={}, endpoints=[], proxy=SimpleNamespace(client_key=None))
    return SimpleNamespace(
        m=m,
        state=SimpleNamespace(workers=dict),
        route_modes=lambda: MODES,
        stats=object,
        proxy_stats=proxy_stats,
    )


def test_kit_status_keeps_the_static_note_and_adds_the_observed_split() -> None:
    notes = collect_status(_source(lambda: {"canaries": [ONE_CLIENT]})).notes  # type: ignore[arg-type]
    assert any(n.startswith("canary without a client key") for n in notes)
    assert any("as observed: all 812 requests came from 1 client key" in n for n in notes)


def test_kit_status_says_the_split_is_unknown_when_the_proxy_cannot_be_read() -> None:
    def unreachable() -> Mapping[str, Any]:
        raise OSError("connection refused")

    notes = collect_status(_source(unreachable)).notes  # type: ignore[arg-type]
    assert any("observed canary split unknown" in n and "connection refused" in n for n in notes)
