"""The whole catalog migration, live: client traffic through the proxy the entire time, every
playbook step to `retire`, zero failed client requests, and a clean verifier at the end.

Runs on the embedded defaults (SQLite, embedded event log); the PostgreSQL + Kafka variant
uses the session's real servers (marked `integration` as well).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kit.runtime.demo_flow import DemoConfig, DemoResult, format_summary, run_demo
from kit.runtime.procs import RunDir, proc_start_ticks

pytestmark = pytest.mark.e2e

SMALL = ("--products", "150", "--customers", "60", "--orders", "120")  # the shop's seed command


def _check(result: DemoResult, lines: list[str], rundir: RunDir) -> None:
    text = "\n".join(lines + format_summary(result))
    assert result.error is None, text
    assert result.traffic is not None and result.traffic.sent > 200, text
    assert result.traffic.failed == 0, text
    from kit.playbook import STEPS

    done = [row.step for row in result.steps if row.status == "done"]
    assert [s for s in STEPS if s in done] == list(STEPS), text  # every step, in order
    assert not result.failed_steps, text
    assert [v.service for v in result.verify] == ["catalog"] and result.verify[0].ok, text
    assert result.ok, text
    # the traffic really exercised writes through the service after the cut-over
    assert result.traffic.by_op.get("create_product", 0) > 0, text
    # and the demo stopped every process it started
    assert rundir.records() == [], text


def _demo(tmp_path: Path, lines: list[str], service: str, **options: Any) -> DemoResult:
    """The demo on the small seed in `tmp_path/demo`, migrating one service, narrating into
    `lines`; `options` are the test's own DemoConfig settings."""
    config = DemoConfig(
        folder=tmp_path / "demo",
        services=(service,),
        seed_args=SMALL,
        echo=lines.append,
        **options,
    )
    return run_demo(config)


def test_catalog_migrates_to_retire_under_live_traffic_with_zero_failures(
    tmp_path: Path, demo_rundir: RunDir
) -> None:
    lines: list[str] = []
    result = _demo(tmp_path, lines, "catalog", clients=3, canary_dwell_s=1.5)
    _check(result, lines, demo_rundir)
    text = "\n".join(lines)
    assert "observed share" in text  # canary share narrated from the proxy's own counters


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_catalog_migrates_on_postgresql_and_kafka(
    tmp_path: Path, demo_rundir: RunDir, postgres_server, kafka_bootstrap: str
) -> None:
    # the data path on PostgreSQL; the kit's own small stores (state, routes, parity) stay SQLite
    names = ("monolith", "catalog", "customers")
    urls = {name: postgres_server.create_database() for name in names}
    lines: list[str] = []
    try:
        result = _demo(
            tmp_path,
            lines,
            "catalog",
            clients=3,
            canary_dwell_s=1.5,
            database_urls=urls,
            kafka_bootstrap=kafka_bootstrap,
        )
        _check(result, lines, demo_rundir)
    finally:
        for url in urls.values():
            postgres_server.drop_database(url.rsplit("/", 1)[1])


def test_a_refused_step_fails_the_demo_and_still_stops_every_process(
    tmp_path: Path, demo_rundir: RunDir
) -> None:
    """The parity gate can never be met here: the demo reports the refusal, fails, cleans up."""
    lines: list[str] = []
    result = _demo(
        tmp_path,
        lines,
        "customers",
        clients=2,
        parity_min_samples=1_000_000,
        step_patience_s=2.0,
    )
    summary = format_summary(result)
    assert not result.ok
    assert [(r.step, r.status) for r in result.steps][-1] == ("canary", "refused")
    assert result.traffic is not None and result.traffic.failed == 0
    assert summary[-1].startswith("FAIL:") and "not done" in summary[-1]
    assert any("waiting: customers: step 'canary' refused: parity" in line for line in lines)
    assert demo_rundir.records() == []
    pids = [int(line.split("pid")[1].split()[0]) for line in lines if " ready in " in line]
    assert pids and all(proc_start_ticks(pid) is None for pid in pids)
