"""Step order, guard rails (refusing, and --force overriding with an audit entry), and
rollback from every step, against a real small shop (SQLite, embedded log, WSGI threads)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from kit.playbook import STEPS, Playbook, StepRefused
from kit.playbook import pipelines as pl
from strangler_proxy.service import ChangeRefused
from tests.playbook_shop import Shop, make_shop


@pytest.fixture
def shop(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Shop]:
    options = getattr(request, "param", {})
    s = make_shop(tmp_path, **options)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def pb(shop: Shop) -> Iterator[Playbook]:
    p = Playbook(shop.manifest, actor="tester")
    try:
        yield p
    finally:
        p.close()


def _advance_to(pb: Playbook, step: str, service: str = "catalog") -> None:
    while True:
        st = pb.state.get(service)
        if (
            st.step == step
            and st.status == "done"
            and (step != "canary" or st.canary_stage == len(pb.m.guards.canary_stages) - 1)
        ):
            return
        result = pb.advance(service)
        assert result.ok, result


def _pair(method: str, path: str, control: bytes, candidate: bytes) -> dict:
    return {
        "method": method,
        "path": path,
        "control_status": 200,
        "control_headers": {"content-type": "application/json"},
        "control_body": control,
        "candidate_status": 200,
        "candidate_headers": {"content-type": "application/json"},
        "candidate_body": candidate,
    }


def _record(pb: Playbook, n: int, *, mismatch: bool, lagged: bool = False) -> None:
    from kit.manifest import parity_rules
    from parity.compare import Comparator
    from parity.recording import PairSink

    sink = PairSink(pb.stats(), Comparator(parity_rules(pb.m)))
    for i in range(n):
        for path in ("/categories", "/categories/1", "/products", f"/products/{i + 1}"):
            other = b'{"a": 2}' if mismatch or lagged else b'{"a": 1}'
            sink.record(_pair("GET", path, b'{"a": 1}', other), lagged=lagged)


def test_a_step_out_of_order_is_refused_with_the_way_forward_and_changes_nothing(
    pb: Playbook,
) -> None:
    with pytest.raises(StepRefused) as info:
        pb.step("catalog", "capture")
    message = str(info.value)
    assert "step out of order: catalog is not started; the next step is 'schema'" in message
    assert "--force" in message
    assert pb.state.get("catalog").step is None
    assert pb.state.audit_log(1, kind="refused")[0].service == "catalog"


def test_force_overrides_the_order_and_is_written_to_the_audit_log(pb: Playbook) -> None:
    assert pb.step("catalog", "schema").ok
    result = pb.step("catalog", "verify", force=True)  # capture skipped: verify sees no rows
    assert result.forced
    forced = pb.state.audit_log(5, kind="forced")
    assert forced and "step out of order" in forced[0].message and forced[0].actor == "tester"
    assert pb.state.history("catalog", 1)[0].forced
    schema_run = pb.state.last_run("catalog", "schema")  # not the newest row: filtered by step
    assert schema_run is not None and schema_run.step == "schema" and not schema_run.forced
    assert pb.state.last_run("catalog", "capture") is None
    plan = {row.step: row for row in pb.plan("catalog")}
    assert plan["schema"].started_at == schema_run.started_at and plan["capture"].started_at is None


@pytest.mark.parametrize("shop", [{"min_samples": 3}], indirect=True)
def test_canary_is_refused_until_parity_has_enough_clean_samples(pb: Playbook) -> None:
    _advance_to(pb, "shadow")
    with pytest.raises(StepRefused) as info:
        pb.advance("catalog")
    assert "GET /products/<int:id> has 0 of 3 shadow samples" in str(info.value)
    _record(pb, 3, mismatch=True)
    with pytest.raises(StepRefused) as info:
        pb.advance("catalog")
    assert "mismatches 100.0% of 3 samples" in str(info.value)
    # the route guard refuses the same change made by hand (kit route set / admin API)
    with pytest.raises(ChangeRefused) as refused:
        pb.routes().set_route("GET", "/products", "canary:10", service="catalog", actor="ops")
    assert "parity: GET /products mismatches 100.0% of 3 shadow samples" in str(refused.value)
    # forcing is allowed, and audited
    pb.routes().set_route(
        "GET", "/products", "canary:10", service="catalog", actor="ops", force=True
    )
    assert any(
        "parity: GET /products mismatches" in a.message and a.actor == "ops"
        for a in pb.state.audit_log(10, kind="forced")
    )
    pb.routes().set_route("GET", "/products", "shadow", service="catalog", actor="ops")
    # fresh, clean evidence lets the step through
    assert pb.step("catalog", "shadow").ok  # re-running shadow resets the statistics
    _record(pb, 3, mismatch=False)
    result = pb.advance("catalog")
    assert result.ok and result.evidence["percent"] == 10
    assert result.evidence["parity"]["GET /products"]["samples"] == 3


@pytest.mark.parametrize("shop", [{"min_samples": 3}], indirect=True)
def test_lagged_pairs_are_neither_samples_nor_mismatches_for_the_gate(pb: Playbook) -> None:
    _advance_to(pb, "shadow")
    _record(pb, 5, mismatch=False, lagged=True)  # differed, agreed on the re-check
    with pytest.raises(StepRefused) as info:
        pb.advance("catalog")
    assert "GET /products/<int:id> has 0 of 3 shadow samples" in str(info.value)
    rows = {(e.method, e.path): e for e in pb.status().endpoints}
    assert rows[("GET", "/products/<int:id>")].lagged == 5
    assert rows[("GET", "/products/<int:id>")].samples == 0
    _record(pb, 3, mismatch=False)
    result = pb.advance("catalog")
    assert result.ok, result
    assert (
        result.evidence["parity"]["GET /products"] | {"samples": 3, "lagged": 5}
        == (result.evidence["parity"]["GET /products"])
    )


def test_no_write_endpoint_goes_to_the_service_while_forward_cdc_owns_its_tables(
    pb: Playbook,
) -> None:
    _advance_to(pb, "reads")
    with pytest.raises(ChangeRefused) as info:
        pb.routes().set_route("POST", "/products", "extracted", service="catalog", actor="ops")
    assert "forward CDC still owns categories, products" in str(info.value)
    assert "kit step catalog writes" in str(info.value)


def test_a_write_endpoint_goes_back_to_the_monolith_only_by_rolling_back_writes(
    pb: Playbook,
) -> None:
    _advance_to(pb, "writes")
    with pytest.raises(ChangeRefused) as info:
        pb.routes().set_route("POST", "/products", "monolith", actor="ops")
    text_ = str(info.value)
    assert "'catalog' owns the writes of categories, products" in text_
    assert "`kit rollback catalog`" in text_ and "force risks exactly that data loss" in text_
    assert pb.route_modes()[("POST", "/products")] == "extracted"  # nothing changed
    forced = pb.routes().set_route("POST", "/products", "monolith", actor="ops", force=True)
    assert forced.version > 0
    assert any(
        "POST /products -> monolith forced past" in a.message
        for a in pb.state.audit_log(10, kind="forced")
    )


def test_a_step_moves_all_its_endpoints_in_one_route_version(pb: Playbook) -> None:
    _advance_to(pb, "shadow")
    before = pb.routes().store.version()
    result = pb.advance("catalog")  # canary: every read endpoint of catalog at once
    assert result.ok
    [change] = result.evidence["route_versions"]
    assert change["version"] == before + 1 == pb.routes().store.version()
    versions = {e.version for e in pb.routes().store.history(20) if e.version > before}
    assert versions == {before + 1}


def test_the_write_cut_over_holds_the_write_routes_then_releases_them_to_the_new_owner(
    pb: Playbook,
) -> None:
    _advance_to(pb, "reads")
    writes = {(e.method, e.path) for e in pb.m.service("catalog").write_endpoints}
    before = pb.routes().store.version()
    assert pb.advance("catalog", force=True).ok  # writes (parity gates are not the point here)
    entries = [e for e in pb.routes().store.history(100) if e.version > before]
    modes = {
        v: {(e.method, e.path): e.new["mode"] for e in entries if e.version == v and e.new}
        for v in sorted({e.version for e in entries})
    }
    held = [v for v, m in modes.items() if m.keys() == writes and set(m.values()) == {"held"}]
    assert held, modes  # one version holds the write routes ...
    assert pb.route_modes()[("POST", "/products")] == "extracted"  # ... a later one releases
    with pytest.raises(ChangeRefused) as refused:  # nobody else sets a route held
        pb.routes().set_route("GET", "/products", "held", service="catalog", actor="ops")
    assert "held is the write cut-over's own mode" in str(refused.value)


@pytest.mark.parametrize("shop", [{"max_lag": 0.0}], indirect=True)
def test_no_route_flip_while_cdc_lags(pb: Playbook) -> None:
    _advance_to(pb, "verify")
    engine = pl.make_engine(pb.m.monolith.database_url)
    with engine.begin() as conn:  # captured, but no worker runs: the pipeline lags
        conn.execute(text("UPDATE products SET name = 'Lagging' WHERE id = 1"))
    engine.dispose()
    with pytest.raises(StepRefused) as info:
        pb.advance("catalog")
    assert "cdc lag: forward CDC of catalog is behind (products 1 event(s)" in str(info.value)
    result = pb.advance("catalog", force=True)
    assert result.ok and result.forced
    assert any("cdc lag" in a.message for a in pb.state.audit_log(10, kind="forced"))


def test_rollback_from_every_step_returns_to_the_previous_one(pb: Playbook) -> None:
    m = pb.m
    _advance_to(pb, "retire")
    assert pb.state.get("catalog").write_owner == "service"
    # a write made through the service while it owns the tables must survive the rollback
    svc = pl.make_engine(m.services["catalog"].database_url)
    with svc.begin() as conn:
        conn.execute(text("UPDATE catalog_product SET name = 'Service Side' WHERE id = 4"))
    svc.dispose()
    seen = []
    while pb.state.get("catalog").step is not None:
        before = pb.state.get("catalog").step
        result = pb.rollback("catalog")
        assert result.ok, result
        after = pb.state.get("catalog")
        seen.append(before)
        expected = STEPS[STEPS.index(before) - 1] if before != "schema" else None
        assert after.step == expected
        modes = pb.route_modes()
        if before == "writes":
            assert after.write_owner == "monolith"
            assert modes[("POST", "/products")] == "monolith"
            mono = pl.make_engine(m.monolith.database_url)
            with mono.connect() as conn:
                name = conn.execute(text("SELECT name FROM products WHERE id = 4")).scalar()
            mono.dispose()
            assert name == "Service Side"
            assert all(pl.capture_enabled(m.monolith.database_url, ["products"]).values())
        if before == "reads":
            assert modes[("GET", "/products")] == "canary:50"
        if before == "canary":
            assert modes[("GET", "/products")] == "shadow"
        if before == "shadow":
            assert modes[("GET", "/products")] == "monolith"
        if before == "capture":
            assert not any(pl.capture_enabled(m.monolith.database_url, ["products"]).values())
    assert seen == list(reversed(STEPS))
    assert pb.state.get("catalog").status == "pending"
    assert set(pb.route_modes().values()) == {"monolith"}
    # and the whole way forward works again after a full rollback
    _advance_to(pb, "verify")
