"""`kit status` warns when a canary cannot split its traffic."""

from __future__ import annotations

from kit.playbook.status import canary_notes

MODES = {("GET", "/notes/<int:id>"): "canary:10", ("GET", "/notes"): "monolith"}


def test_a_canary_without_a_client_key_is_named_with_the_setting_that_fixes_it() -> None:
    (note,) = canary_notes(None, MODES)
    assert "GET /notes/<int:id> (canary:10)" in note and "GET /notes " not in note
    assert 'client_key = { hash_header = "Authorization" }' in note


def test_no_note_with_a_client_key_or_without_a_canary() -> None:
    assert canary_notes({"hash_header": "Authorization"}, MODES) == []
    assert canary_notes(None, {("GET", "/notes"): "extracted"}) == []
