"""The live migration demo: everything up, client traffic flowing, services migrated step by step.

`run_demo(DemoConfig)` is what `kit demo` runs and what the end-to-end tests run (with one
service, or on PostgreSQL + Kafka): it prepares a fresh folder with a demo manifest on free
loopback ports, upgrades and seeds the monolith, starts every process (`kit up`), sends
continuous client traffic through the proxy, and drives the playbook through every step of
each service to `retire`, narrating each step and its evidence. It always stops what it
started (`kit down`), and returns a `DemoResult` whose `ok` is the bar: zero failed client
requests, every step done, and a clean verifier for every migrated service.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kit.manifest import Manifest, load_manifest
from kit.runtime.demo_manifest import write_demo_manifest
from kit.runtime.plan import build_specs, proxy_url, read_admin_stats, run_dir
from kit.runtime.procs import RunDir
from kit.runtime.seeding import seed_monolith
from kit.runtime.supervisor import Supervisor, stop_all
from kit.runtime.traffic import RESOURCES, WRITE_OPS, Traffic, TrafficConfig, TrafficReport
from kit.runtime.watchdog import read_state

Echo = Callable[[str], None]

#: Arguments of the shop's seed command (the manifest's `[monolith] seed`): a few minutes' demo.
DEMO_SEED = ("--products", "300", "--customers", "150", "--orders", "300")


@dataclass
class DemoConfig:
    """Where and how big; defaults are sized to finish in a few minutes on two cores."""

    folder: Path
    services: tuple[str, ...] = ("catalog", "customers")
    seed_args: tuple[str, ...] = DEMO_SEED  # given to the manifest's seed command
    clients: int = 4
    think_s: float = 0.03
    database_urls: Mapping[str, str] = field(default_factory=dict)
    kafka_bootstrap: str | None = None
    parity_min_samples: int = 8
    canary_stages: tuple[int, ...] = (10, 50)
    canary_dwell_s: float = 3.0
    writes_dwell_s: float = 5.0
    step_patience_s: float = 90.0
    echo: Echo = print

    def __post_init__(self) -> None:
        if not self.services:
            raise ValueError("services must name at least one service to migrate")
        if self.clients < 1:
            raise ValueError("clients must be at least 1")
        if self.step_patience_s <= 0 or self.canary_dwell_s < 0 or self.writes_dwell_s < 0:
            raise ValueError("step_patience_s must be positive, the dwell times >= 0")


@dataclass
class StepRow:
    """One line of the summary table."""

    service: str
    step: str
    status: str  # "done", "failed", "refused"
    seconds: float
    evidence: str
    forced: bool = False


@dataclass
class VerifyRow:
    service: str
    ok: bool
    detail: str


@dataclass
class DemoResult:
    steps: list[StepRow]
    traffic: TrafficReport | None
    verify: list[VerifyRow]
    watchdog_restarts: int
    elapsed_s: float
    error: str | None = None

    @property
    def failed_steps(self) -> list[StepRow]:
        return [s for s in self.steps if s.status != "done"]

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and not self.failed_steps
            and self.traffic is not None
            and self.traffic.failed == 0
            and self.traffic.sent > 0
            and bool(self.verify)
            and all(v.ok for v in self.verify)
        )


# --- narration ------------------------------------------------------------------------------


def _short(value: Any, limit: int = 110) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_evidence(evidence: Mapping[str, Any]) -> list[str]:
    """Readable lines from a step's evidence dict, whatever its exact shape."""
    lines: list[str] = []
    for key, value in evidence.items():
        if (
            isinstance(value, Mapping)
            and value
            and all(not isinstance(v, Mapping | list) for v in value.values())
        ):
            inner = ", ".join(f"{k}={v}" for k, v in value.items())
            lines.append(f"{key}: {_short(inner)}")
        elif isinstance(value, Mapping):
            lines.append(f"{key}:")
            for k, v in value.items():
                if isinstance(v, Mapping):
                    v = ", ".join(f"{a}={b}" for a, b in v.items() if not isinstance(b, list))
                lines.append(f"  {k}: {_short(v)}")
        else:
            lines.append(f"{key}: {_short(value)}")
    return lines


def _compact(key: str, value: Any) -> str | None:
    """One short `key=value` fact, or None when the value says nothing in a table cell."""
    if isinstance(value, bool | int | float):
        return f"{key}={value}"
    if isinstance(value, str):
        text = value.rsplit("/", 1)[-1] if "/" in value else value
        return f"{key}={text}" if len(text) <= 40 else None
    if isinstance(value, list):
        return f"{key}: {len(value)}"
    if isinstance(value, Mapping) and value:
        inner = list(value.values())
        if all(isinstance(v, Mapping) for v in inner) and all("samples" in v for v in inner):
            samples = sum(int(v.get("samples", 0)) for v in inner)
            bad = sum(int(v.get("mismatches", 0)) for v in inner)
            return f"{key}: {samples} samples, {bad} mismatches"
        if all(isinstance(v, int | float | str) for v in inner):
            return f"{key}: " + ", ".join(f"{k}={v}" for k, v in value.items())
    return None


def evidence_summary(step: str, evidence: Mapping[str, Any], extra: str = "") -> str:
    """The few facts of a step worth a summary-table cell."""
    preferred = ("snapshot", "differences", "parity", "percent", "reverse_topics", "revision")
    keys = [k for k in preferred if k in evidence] + [k for k in evidence if k not in preferred]
    picks = [extra] if extra else []
    for key in keys:
        fact = _compact(key, evidence[key])
        if fact:
            picks.append(fact)
        if len(picks) == 3:
            break
    return _short("; ".join(picks) or "-", 90)


_WAY_FORWARD = re.compile(r";? ?way forward: [^;\n]*")


def short_reason(reason: str) -> str:
    """A guard refusal without the repeated `way forward` advice, on one line."""
    first = reason.split("\n", 1)[0]
    return _short(_WAY_FORWARD.sub("", first), 200)


# --- proxy evidence -------------------------------------------------------------------------


class AdminClient:
    """Reads the proxy's live per-route statistics (for the observed canary share)."""

    def __init__(self, m: Manifest) -> None:
        self.m = m

    def series(self) -> list[dict[str, Any]]:
        try:
            return list(read_admin_stats(self.m).get("series", []))
        except (OSError, httpx.HTTPError, ValueError):
            return []


def served_counts(series: Sequence[Mapping[str, Any]], patterns: set[str]) -> dict[str, int]:
    """Requests per target over the given route patterns."""
    counts: dict[str, int] = {}
    for row in series:
        if row.get("route") in patterns:
            counts[row["target"]] = counts.get(row["target"], 0) + int(row.get("requests", 0))
    return counts


def share_between(
    before: Mapping[str, int], after: Mapping[str, int], service: str
) -> tuple[int, int]:
    """(requests answered by `service`, all requests) between two `served_counts`."""
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    total = sum(v for k, v in delta.items() if k in (service, "monolith"))
    return delta.get(service, 0), total


# --- the flow -------------------------------------------------------------------------------


def _resource_of(m: Manifest, service: str) -> list[str]:
    """Traffic resources whose writes this service takes over (`/products` → products)."""
    found: list[str] = []
    for endpoint in m.service(service).endpoints:
        first = endpoint.path.strip("/").split("/")[0]
        if endpoint.kind == "write" and first in RESOURCES and first not in found:
            found.append(first)
    return found


def prepare_folder(folder: Path, echo: Echo) -> None:
    """Stop whatever a previous demo left running in `folder`, then empty it."""
    var = folder / "var"
    leftovers = stop_all(RunDir(var / "run", var / "log"), 5.0)
    if leftovers:
        echo(f"  stopped {len(leftovers)} process(es) left over from a previous demo")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


class _Migration:
    """Drives one service through the playbook with retries on guard refusals."""

    def __init__(self, config: DemoConfig, m: Manifest, traffic: Traffic, admin: AdminClient):
        from kit.playbook import STEPS, Playbook, StepRefused

        self.config = config
        self.m = m
        self.traffic = traffic
        self.admin = admin
        self.steps_order = STEPS
        self.refused_type = StepRefused
        self.playbook = Playbook(m, actor="kit demo")
        self.echo = config.echo

    def close(self) -> None:
        self.playbook.close()

    def finished(self, service: str) -> bool:
        return all(row.status == "done" for row in self.playbook.plan(service))

    def migrate(self, service: str, rows: list[StepRow]) -> bool:
        echo = self.echo
        echo(f"\n━━ migrating {service} ━━")
        patterns = {e.path for e in self.m.service(service).endpoints if e.kind == "read"}
        rounds = 0
        while not self.finished(service):
            rounds += 1
            step = self.playbook.next_step(service)
            if rounds > 4 * len(self.steps_order) + 10:
                rows.append(StepRow(service, step, "failed", 0.0, "no progress"))
                return False
            before = served_counts(self.admin.series(), patterns)
            started = time.monotonic()
            result = self._advance_patiently(service, step, started)
            if result is None:
                rows.append(
                    StepRow(service, step, "refused", time.monotonic() - started, "guard refused")
                )
                return False
            if isinstance(result, Exception):
                rows.append(
                    StepRow(
                        service, step, "failed", time.monotonic() - started, _short(str(result), 70)
                    )
                )
                return False
            if result.status != "done":
                rows.append(
                    StepRow(
                        service, result.step, "failed", result.duration_s, _short(str(result), 70)
                    )
                )
                return False
            extra = ""
            if result.step == "canary" and self.config.canary_dwell_s > 0:
                time.sleep(self.config.canary_dwell_s)  # let traffic show the share
                to_service, total = share_between(
                    before, served_counts(self.admin.series(), patterns), service
                )
                if total:
                    extra = f"observed {to_service}/{total} = {to_service / total:.0%}"
                    echo(
                        f"    · observed share: {to_service} of {total} {service} read requests "
                        f"({to_service / total:.0%}) answered by {service}; sticky per user, "
                        f"{self.config.clients * self.traffic.config.users_per_client} users"
                    )
            if result.step == "writes":
                extra = self._writes_evidence(service)
            rows.append(
                StepRow(
                    service,
                    result.step,
                    "done",
                    result.duration_s,
                    evidence_summary(result.step, result.evidence, extra),
                    forced=bool(getattr(result, "forced", False)),
                )
            )
        return True

    def _writes_evidence(self, service: str) -> str:
        """Turn on client writes of the service's resources, let them flow, and show that
        reverse CDC carries them into the monolith's tables (the verifier agrees)."""
        echo = self.echo
        resources = _resource_of(self.m, service)
        for resource in resources:
            self.traffic.enable_writes(resource)
        if not resources or self.config.writes_dwell_s <= 0:
            return ""
        echo(f"    · traffic: clients now also create, read and change {', '.join(resources)}")
        before = self.traffic.report().by_op
        time.sleep(self.config.writes_dwell_s)
        after = self.traffic.report().by_op
        writes = sum(after.get(op, 0) - before.get(op, 0) for op in WRITE_OPS)
        row = verify_service(self.m, service)
        state = "in sync" if row.ok else "DIFFERS"
        echo(
            f"    · reverse CDC: {writes} client writes served by {service} in "
            f"{self.config.writes_dwell_s:.0f}s; monolith tables {state}: {row.detail}"
        )
        return f"{writes} writes via {service}, monolith {state}"

    def _advance_patiently(self, service: str, step: str, started: float) -> Any:
        """advance(); on a guard refusal keep traffic flowing and retry until patience runs out."""
        echo = self.echo
        echo(f"\n▸ {service}: {step}")
        last_reason = None
        deadline = started + self.config.step_patience_s
        while True:
            try:
                result = self.playbook.advance(service, progress=lambda line: echo(f"    {line}"))
            except self.refused_type as refusal:
                reason = str(refusal)
                if time.monotonic() >= deadline:
                    echo(f"    ✗ refused after {self.config.step_patience_s:.0f}s: {reason}")
                    return None
                short = short_reason(reason)
                if short != last_reason:
                    echo(f"    … waiting: {short}")
                    last_reason = short
                time.sleep(1.0)
                continue
            except Exception as error:  # noqa: BLE001 - reported as a failed step
                echo(f"    ✗ {type(error).__name__}: {error}")
                return error
            for line in describe_evidence(result.evidence):
                echo(f"    · {line}")
            mark = "✓" if result.status == "done" else "✗"
            echo(
                f"    {mark} {result.step} {result.status} in {result.duration_s:.1f}s"
                f"   [traffic: {self.traffic.report().line()}]"
            )
            return result


def verify_service(m: Manifest, service: str, attempts: int = 10) -> VerifyRow:
    """The CDC verifier (monolith tables vs service tables through the mapping), retried
    briefly so in-flight changes can land."""
    from cdc.mapping import load_mapping
    from cdc.verify import verify
    from kitcore.db import make_engine as cdc_engine

    spec = m.service(service)
    mapping = load_mapping(spec.mapping_path)
    source = cdc_engine(m.monolith.database_url)
    target = cdc_engine(spec.database_url)
    try:
        report = None
        for _ in range(attempts):
            report = verify(source, target, mapping, None, 5000)
            if report.ok:
                break
            time.sleep(1.0)
        assert report is not None
        tables = ", ".join(
            f"{t.source}→{t.target} {t.source_rows}/{t.target_rows} rows" for t in report.tables
        )
        if report.ok:
            return VerifyRow(service, True, f"match: {tables}")
        return VerifyRow(service, False, f"{report.differences} difference(s): {tables}")
    finally:
        source.dispose()
        target.dispose()


def run_demo(config: DemoConfig) -> DemoResult:
    """The whole demo; never leaves a process running."""
    echo = config.echo
    started = time.monotonic()
    folder = config.folder.resolve()
    echo(f"• fresh demo folder {folder}")
    prepare_folder(folder, echo)
    manifest_path = write_demo_manifest(
        folder,
        database_urls=config.database_urls,
        kafka_bootstrap=config.kafka_bootstrap,
        parity_min_samples=config.parity_min_samples,
        canary_stages=config.canary_stages,
    )
    m = load_manifest(manifest_path)
    for name in config.services:
        m.service(name)  # unknown names fail before anything starts
    transport = (
        "Kafka " + str(m.transport.bootstrap_servers)
        if m.transport.kind == "kafka"
        else "embedded log"
    )
    echo(f"• manifest {manifest_path} (transport: {transport})")
    echo("• monolith database: migrating and seeding")
    seeded = seed_monolith(m, config.seed_args, capture=True)
    echo("  " + (seeded.strip().splitlines() or ["(the seed command printed nothing)"])[-1])

    rows: list[StepRow] = []
    verify_rows: list[VerifyRow] = []
    report: TrafficReport | None = None
    error: str | None = None
    rundir = run_dir(m)
    supervisor = Supervisor(build_specs(m), rundir, echo=echo)
    traffic: Traffic | None = None
    migration: _Migration | None = None
    try:
        echo("• kit up: monolith, services, proxy, CDC watchdog")
        supervisor.up()
        traffic = Traffic(
            TrafficConfig(proxy_url(m), clients=config.clients, think_s=config.think_s)
        )
        traffic.start()
        echo(
            f"• client traffic: {config.clients} clients × "
            f"{traffic.config.users_per_client} users through the proxy {proxy_url(m)}"
        )
        migration = _Migration(config, m, traffic, AdminClient(m))
        for service in config.services:
            if not migration.migrate(service, rows):
                error = f"{service} did not reach retire"
                break
        if error is None:
            echo("\n• final check: the CDC verifier, monolith tables vs service tables")
            for service in config.services:
                row = verify_service(m, service)
                verify_rows.append(row)
                echo(f"  {service}: {'clean' if row.ok else 'DIFFERENCES'} — {row.detail}")
    except Exception as exc:  # noqa: BLE001 - the demo reports, then always cleans up
        error = f"{type(exc).__name__}: {exc}"
        echo(f"✗ {error}")
    finally:
        if traffic is not None:
            report = traffic.stop()
        if migration is not None:
            migration.close()
        restarts = (read_state(rundir) or {}).get("restarts", 0)
        echo("\n• kit down")
        supervisor.down()
    return DemoResult(rows, report, verify_rows, int(restarts), time.monotonic() - started, error)


def format_summary(result: DemoResult) -> list[str]:
    """The closing table: every step, the verifier, and the client traffic."""
    lines = ["", "Summary", "-------"]
    header = f"{'service':<11}{'step':<9}{'result':<9}{'secs':>6}  evidence"
    lines += [header, "-" * len(header)]
    for row in result.steps:
        status = row.status + (" (forced)" if row.forced else "")
        lines.append(
            f"{row.service:<11}{row.step:<9}{status:<9}{row.seconds:>6.1f}  {row.evidence}"
        )
    for row in result.verify:
        lines.append(
            f"{row.service:<11}{'verifier':<9}{'clean' if row.ok else 'DIFFERS':<9}{'':>6}  {row.detail}"
        )
    t = result.traffic
    lines.append("")
    if t is not None:
        lines.append(
            f"client requests: {t.sent:,} sent, {t.failed:,} failed "
            f"({t.rate:.0f} req/s over {t.elapsed_s:.0f}s; latency p50 "
            f"{t.p50_ms or 0:.1f} ms, p95 {t.p95_ms or 0:.1f} ms, p99 {t.p99_ms or 0:.1f} ms)"
        )
        for failure in t.failures[-5:]:
            lines.append(
                f"  failed: {failure.method} {failure.path} → {failure.status}: {failure.detail[:120]}"
            )
    lines.append(f"CDC worker restarts by the watchdog: {result.watchdog_restarts}")
    lines.append(f"elapsed: {result.elapsed_s:.0f}s")
    verdict = "PASS: zero failed client requests, every step done, verifier clean"
    if not result.ok:
        reasons = []
        if result.error:
            reasons.append(result.error)
        if t is None or t.failed:
            reasons.append(f"{t.failed if t else '?'} failed client request(s)")
        if result.failed_steps:
            reasons.append(f"{len(result.failed_steps)} step(s) not done")
        if not result.verify or not all(v.ok for v in result.verify):
            reasons.append("verifier not clean")
        verdict = "FAIL: " + "; ".join(reasons)
    lines.append(verdict)
    return lines
