"""`kit parity`: replay requests against monolith and service, learn noise, record, report."""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from kit.manifest import (
    SAFE_METHODS,
    ManifestError,
    load_manifest,
    parity_redactor,
    parity_rules,
)
from parity.auth import (
    AuthError,
    Credentials,
    authenticated,
    check_replayable,
    parse_header_option,
    replayable,
)
from parity.compare import Comparator
from parity.model import Request
from parity.noise import NoiseLearner
from parity.recording import RecordingStore, Redactor
from parity.report import RunReport, render_html, render_table
from parity.rules import EndpointPattern, EndpointResolver, RulesError, RuleSet
from parity.runner import BackendError, HttpBackend, Runner
from parity.sources import (
    discover_ids,
    from_openapi,
    from_recording,
    load_list_file,
    load_openapi,
)

SERVICE_HELP = (
    "Service name from the migration manifest (./kit.toml, $KIT_MANIFEST or kit --manifest): "
    "supplies the monolith and service URLs, limits requests to the service's read endpoints "
    "and uses the manifest's parity rules. Explicit options win over the manifest."
)


def _parse_ids(values: Iterable[str]) -> dict[str, list[Any]]:
    pool: dict[str, list[Any]] = {}
    for value in values:
        name, sep, raw = value.partition("=")
        if not sep or not name or not raw:
            raise click.BadParameter(
                f"{value!r}: expected NAME=V1,V2 (e.g. id=1,2,3)", param_hint="--ids"
            )
        items = [v.strip() for v in raw.split(",") if v.strip()]
        pool.setdefault(name.strip(), []).extend(int(v) if v.isdigit() else v for v in items)
    return pool


def _load_rules(path: str | None) -> RuleSet:
    if not path:
        return RuleSet()
    try:
        return RuleSet.load(path)
    except RulesError as exc:
        raise click.BadParameter(str(exc), param_hint="--rules") from None


def _endpoint_filter(endpoints: tuple[str, ...]) -> Callable[[Request], bool] | None:
    if not endpoints:
        return None
    try:
        patterns = [EndpointPattern.parse(e) for e in endpoints]
    except RulesError as exc:
        raise click.BadParameter(str(exc), param_hint="--endpoint") from None
    return lambda r: any(p.matches(r.method, r.path) for p in patterns)


@dataclass(frozen=True)
class _Source:
    """Where a command's requests come from: the options `_source_options` adds."""

    recording: str | None
    openapi: str | None
    request_file: str | None
    ids: tuple[str, ...]
    endpoints: tuple[str, ...]
    limit: int | None
    headers: tuple[str, ...] = ()
    auth_command: str | None = None

    def requests(
        self, base_url: str, resolver: EndpointResolver, targets: _Targets, auth: Credentials
    ) -> list[Request]:
        """The requests to send. The OpenAPI document defaults to the manifest's `openapi`
        (else `/openapi.json`) on `base_url`; a recording whose credentials were redacted
        is refused unless credentials are given."""
        pool = _parse_ids(self.ids)
        chosen = [x for x in (self.recording, self.openapi, self.request_file) if x]
        if len(chosen) > 1:
            raise click.UsageError("give only one of --from, --openapi, --requests")
        try:
            if self.recording:
                reqs, left_out = replayable(list(from_recording(self.recording)))
                if left_out:
                    click.echo(
                        f"left out {left_out} recorded request(s) whose path held "
                        "redacted personal data: replayed, both sides would answer for "
                        "the placeholder and match without proving anything",
                        err=True,
                    )
                check_replayable(reqs, auth, source=f"recording {self.recording}")
            elif self.request_file:
                reqs = load_list_file(self.request_file)
            else:
                source = self.openapi or _openapi_location(base_url, targets.openapi)
                _, headers = auth.current()
                doc = load_openapi(source, headers=headers)
                found = _existing_ids(doc, base_url, auth, targets.ids)
                gen = from_openapi(doc, pool, path_ids=found)
                for endpoint in gen.endpoints:
                    resolver.add(endpoint)
                for reason in gen.skipped:
                    click.echo(f"skipped {reason}", err=True)
                reqs = gen.requests
        except AuthError as exc:
            raise click.ClickException(str(exc)) from None
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"cannot read requests: {exc}") from None
        # a run against live backends must never write to live data
        writes = [r for r in reqs if r.method not in SAFE_METHODS]
        if writes:
            raise click.ClickException(
                f"{len(writes)} request(s) would write, first: {writes[0]}. Runs against live "
                "backends send only GET/HEAD/OPTIONS; compare writes on scratch databases "
                "(parity.runner.WriteScenario)."
            )
        keep = _endpoint_filter(self.endpoints)
        if keep is not None:
            reqs = [r for r in reqs if keep(r)]
        if self.limit is not None:
            reqs = reqs[: self.limit]
        if not reqs:
            raise click.ClickException("no requests to send (check the source and --endpoint)")
        return reqs


def _requests(
    source: _Source, base_url: str, resolver: EndpointResolver, targets: _Targets, auth: Credentials
) -> list[Request]:
    """The source's requests; an auth hook that fails is a clear CLI error."""
    try:
        return source.requests(base_url, resolver, targets, auth)
    except AuthError as exc:
        raise click.ClickException(str(exc)) from None


def _openapi_location(base_url: str, configured: str | None) -> str:
    """The manifest's `openapi` (a path on the monolith, a URL or a file), else the usual."""
    where = configured or "/openapi.json"
    if where.startswith(("http://", "https://")) or not where.startswith("/"):
        return where
    return base_url.rstrip("/") + where


def _existing_ids(
    doc: dict[str, Any], base_url: str, auth: Credentials, id_paths: dict[str, str]
) -> dict[str, list[Any]]:
    """Ids the live control lists, per parameterised path (see parity.sources.discover_ids),
    asked with the run's credentials."""
    with authenticated(HttpBackend(base_url, timeout=10.0), auth) as backend:

        def fetch(path: str) -> Any:
            response = backend.send(Request("GET", path))
            return response.json() if response.status == 200 and response.is_json else None

        return discover_ids(doc, fetch, id_paths=id_paths)


@dataclass(frozen=True)
class _Targets:
    """What `--service` takes from the manifest; explicit options override each part."""

    control: str | None
    candidate: str | None
    proxy: str | None
    rules: RuleSet | None
    endpoints: tuple[str, ...]
    openapi: str | None = None
    auth: tuple[str, ...] | None = None
    redactor: Redactor | None = None
    ids: dict[str, str] = dataclasses.field(default_factory=dict)
    rules_file: Path | None = None  # where `learn-noise --save` writes

    @classmethod
    def of(cls, service: str | None) -> _Targets:
        if not service:
            return cls(None, None, None, None, ())
        try:
            manifest = load_manifest(None)
            spec = manifest.service(service)
            rules = parity_rules(manifest)
        except (ManifestError, RulesError) as exc:
            raise click.ClickException(str(exc)) from None
        reads = tuple(e.label for e in spec.read_endpoints)
        if not reads:
            raise click.ClickException(f"service {service!r} declares no read endpoints")
        proxy = f"http://{manifest.proxy.listen}"
        p = manifest.parity
        return cls(
            manifest.monolith.url,
            spec.url,
            proxy,
            rules,
            reads,
            openapi=manifest.monolith.openapi,
            auth=p.auth,
            redactor=parity_redactor(manifest),
            ids=dict(p.ids),
            rules_file=spec.parity_rules_file or p.rules_file,
        )

    def credentials(self, headers: tuple[str, ...], auth: str | None) -> Credentials:
        """`--header` values plus the auth hook (`--auth`, else the manifest's)."""
        pairs = []
        for text in headers:
            try:
                pairs.append(parse_header_option(text))
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--header") from None
        credentials = Credentials(pairs, auth or self.auth)
        try:
            credentials.current()  # the hook runs at the start: a broken one stops here
        except AuthError as exc:
            raise click.ClickException(str(exc)) from None
        return credentials

    def redactor_with(
        self, fields: tuple[str, ...] = (), headers: tuple[str, ...] = ()
    ) -> Redactor:
        """The manifest's redaction (else the defaults) plus the command's own fields."""
        base = self.redactor or Redactor()
        return Redactor(
            headers=[*base.header_names, *headers],
            fields=[*base.fields, *fields],
            patterns=base.patterns,
        )

    def source(self, source: _Source) -> _Source:
        """The user's source, limited to the service's read endpoints unless --endpoint says,
        its OpenAPI document where the manifest says the monolith serves it."""
        if source.endpoints or not self.endpoints:
            return source
        return dataclasses.replace(source, endpoints=self.endpoints)

    def rules_or(self, rules_file: str | None) -> RuleSet:
        return _load_rules(rules_file) if rules_file or self.rules is None else self.rules


def _write_html(report: RunReport, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(render_html(report), encoding="utf-8")
    click.echo(f"HTML report: {path}")


class _Progress:
    """Progress on stderr: a live line on a terminal, every 10% otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.last_decile = -1

    def __call__(self, done: int, total: int | None, counts: Counter) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if self.tty:
            if not finished and now - self.last < 0.2:
                return
            self.last = now
            click.echo(f"\r{self.label}: {self._text(done, total, counts)}", err=True, nl=finished)
            return
        if total:
            decile = done * 10 // total
            if decile > self.last_decile:
                self.last_decile = decile
                click.echo(f"{self.label}: {self._text(done, total, counts)}", err=True)

    @staticmethod
    def _text(done: int, total: int | None, counts: Counter) -> str:
        of = f"/{total}" if total else ""
        return (
            f"{done}{of} requests — {counts.get('match', 0)} match, "
            f"{counts.get('mismatch', 0)} mismatch, {counts.get('noise-only', 0)} noise, "
            f"{counts.get('error', 0)} errors, {counts.get('denied', 0)} denied"
        )


def _source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--from",
            "recording",
            type=click.Path(exists=True, dir_okay=False),
            help="Replay the requests of a recording (.jsonl); only safe methods.",
        ),
        click.option(
            "--openapi",
            help="OpenAPI document (URL or file) to generate GET requests from; default <control> + the manifest's monolith.openapi (/openapi.json).",
        ),
        click.option(
            "--requests",
            "request_file",
            type=click.Path(exists=True, dir_okay=False),
            help="Hand-written requests: one 'GET /path?q=1' per line, or a JSON array.",
        ),
        click.option(
            "--ids",
            multiple=True,
            metavar="NAME=V1,V2",
            help="Values for path/query parameters of generated requests, e.g. --ids id=1,2,3.",
        ),
        click.option(
            "--endpoint",
            "endpoints",
            multiple=True,
            metavar="'METHOD /pattern'",
            help="Only these endpoints, e.g. 'GET /products/<int:id>' (repeatable).",
        ),
        click.option(
            "--limit", type=click.IntRange(min=1), help="Send at most this many requests."
        ),
        click.option(
            "--header",
            "headers",
            multiple=True,
            metavar="NAME:VALUE",
            help="Header sent with every request to both sides, e.g. 'Authorization: Bearer "
            "...' (repeatable; never written to a recording or report).",
        ),
        click.option(
            "--auth",
            "auth_command",
            metavar="COMMAND",
            help="Auth hook: a command printing headers ('Name: value' lines or a JSON "
            "object), run at start and again on a 401; default: the manifest's [parity] auth.",
        ),
    ]

    @functools.wraps(func)
    def with_source(
        *args: Any,
        recording: str | None,
        openapi: str | None,
        request_file: str | None,
        ids: tuple[str, ...],
        endpoints: tuple[str, ...],
        limit: int | None,
        headers: tuple[str, ...],
        auth_command: str | None,
        **kwargs: Any,
    ) -> Any:
        source = _Source(
            recording, openapi, request_file, ids, endpoints, limit, headers, auth_command
        )
        return func(*args, source=source, **kwargs)

    wrapped: Callable[..., Any] = with_source
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped


@click.group(name="parity")
def cli() -> None:
    """Compare monolith (control) and service (candidate) responses."""


@cli.command("run")
@click.option("--service", help=SERVICE_HELP)
@click.option("--control", help="Control base URL (the monolith), e.g. http://127.0.0.1:8000.")
@click.option("--candidate", help="Candidate base URL (the extracted service).")
@_source_options
@click.option(
    "--concurrency",
    default=4,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Requests in flight.",
)
@click.option(
    "--rules", "rules_file", type=click.Path(dir_okay=False), help="Rules file (.toml or .json)."
)
@click.option(
    "--learn-noise/--no-learn-noise",
    default=False,
    show_default=True,
    help="Also ask the control a second time; paths where it disagrees with itself are noise.",
)
@click.option(
    "--save-noise",
    type=click.Path(dir_okay=False),
    help="Write learned noise (plus --rules) as a rules file.",
)
@click.option(
    "--threshold",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Mismatches (and errors) tolerated before exiting non-zero.",
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False), help="Write the JSON report here."
)
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False),
    help="Write the self-contained HTML report here.",
)
@click.option("--timeout", default=10.0, show_default=True, help="Per-request timeout in seconds.")
@click.option(
    "--redact-field", multiple=True, help="Extra JSON field name or $.path to redact in reports."
)
@click.option(
    "--accept-denied",
    is_flag=True,
    help="Do not fail on requests both sides refused (401/403), e.g. when checking that "
    "anonymous access is refused alike; they are still counted apart from matches.",
)
def run_cmd(
    service: str | None,
    control: str | None,
    candidate: str | None,
    source: _Source,
    concurrency: int,
    rules_file: str | None,
    learn_noise: bool,
    save_noise: str | None,
    threshold: int,
    json_out: str | None,
    html_out: str | None,
    timeout: float,
    redact_field: tuple[str, ...],
    accept_denied: bool,
) -> None:
    """Replay requests against control and candidate and report per endpoint."""
    targets = _Targets.of(service)
    control, candidate = control or targets.control, candidate or targets.candidate
    if not control or not candidate:
        raise click.UsageError("give --service, or --control and --candidate URLs")
    rules = targets.rules_or(rules_file)
    resolver = EndpointResolver(rules.endpoint_patterns())
    auth = targets.credentials(source.headers, source.auth_command)
    reqs = _requests(targets.source(source), control, resolver, targets, auth)
    comparator = Comparator(rules, resolver)
    redactor = targets.redactor_with(fields=redact_field, headers=tuple(auth.names()))
    try:
        # one Credentials for both sides: monolith and service get the same headers
        ctl = authenticated(
            HttpBackend(control, timeout=timeout, max_connections=concurrency * 2, name=control),
            auth,
        )
        cand = authenticated(
            HttpBackend(
                candidate, timeout=timeout, max_connections=concurrency * 2, name=candidate
            ),
            auth,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    runner = Runner(
        ctl,
        cand,
        comparator,
        concurrency=concurrency,
        learn_noise=learn_noise,
        progress=_Progress("parity"),
        redactor=redactor,
    )
    try:
        report = runner.run(reqs)
    finally:
        ctl.close()
        cand.close()
    click.echo(render_table(report))
    if json_out:
        report.save_json(json_out)
        click.echo(f"JSON report: {json_out}")
    if html_out:
        _write_html(report, html_out)
    if save_noise and runner.noise is not None:
        runner.noise.save(save_noise, base=rules)
        click.echo(f"learned noise saved to {save_noise}")
    code = report.exit_code(threshold, denied_count=not accept_denied)
    if code:
        t = report.totals
        click.echo(
            f"FAIL: {t.mismatches} mismatches, {t.errors} errors, {t.denied} refused by both "
            f"sides (threshold {threshold})",
            err=True,
        )
    sys.exit(code)


@cli.command("learn-noise")
@click.option("--service", help=SERVICE_HELP)
@click.option("--control", help="Control base URL (the monolith); default from --service.")
@_source_options
@click.option(
    "--repeat",
    default=2,
    show_default=True,
    type=click.IntRange(2, 10),
    help="Answers per request compared with each other.",
)
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(dir_okay=False),
    help="Base rules to extend (ignores apply while learning).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Rules file to write (.toml or .json).",
)
@click.option(
    "--save",
    is_flag=True,
    help="Write to the rules file the manifest references (the service's parity.rules_file, "
    "else [parity] rules_file), merged with what it holds: nothing to paste.",
)
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 256))
def learn_noise_cmd(
    service: str | None,
    control: str | None,
    source: _Source,
    repeat: int,
    rules_file: str | None,
    out: str | None,
    save: bool,
    concurrency: int,
) -> None:
    """Ask the control the same requests several times; save where it disagrees with itself."""
    targets = _Targets.of(service)
    control = control or targets.control
    if not control:
        raise click.UsageError("give --service or --control")
    out_path, base = _noise_destination(targets, out, save)
    rules = targets.rules_or(rules_file)
    resolver = EndpointResolver(rules.endpoint_patterns())
    auth = targets.credentials(source.headers, source.auth_command)
    reqs = _requests(targets.source(source), control, resolver, targets, auth)
    comparator = Comparator(rules, resolver)
    learner = NoiseLearner(comparator)
    progress = _Progress("learn-noise")
    from concurrent.futures import ThreadPoolExecutor

    with authenticated(HttpBackend(control, max_connections=concurrency * 2), auth) as backend:

        def observe(req: Request) -> str:
            """`match` when the control agreed with itself, `noise-only` when not."""
            try:
                answers = [backend.send(req) for _ in range(repeat)]
            except BackendError as exc:
                click.echo(f"skipped {req}: {exc}", err=True)
                return "error"
            endpoint = comparator.endpoint_of(req)
            noisy = False
            for other in answers[1:]:
                noisy = bool(learner.observe(endpoint, answers[0], other)) or noisy
            return "noise-only" if noisy else "match"

        counts: Counter = Counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for n, outcome in enumerate(pool.map(observe, reqs), 1):
                counts[outcome] += 1
                progress(n, len(reqs), counts)
    learner.save(out_path, base=base if base is not None else rules)
    mapping = learner.as_mapping()
    for endpoint, paths in mapping.items():
        click.echo(f"{endpoint}: {', '.join(paths)}")
    click.echo(
        f"{sum(len(p) for p in mapping.values())} noise path(s) on {len(mapping)} endpoint(s) "
        f"saved to {out_path}"
    )


def _noise_destination(
    targets: _Targets, out: str | None, save: bool
) -> tuple[Path, RuleSet | None]:
    """Where learned noise goes, and the rules it is merged into: `--out` (with the run's
    rules), or with `--save` the manifest's rules file (with what that file holds)."""
    if out and save:
        raise click.UsageError("give --out or --save, not both")
    if out:
        return Path(out), None
    if not save:
        raise click.UsageError(
            "give --out FILE, or --save (with --service) to write the "
            "rules file the manifest references"
        )
    if targets.rules_file is None:
        raise click.UsageError(
            "--save needs a rules file named in the manifest: add rules_file = "
            '"parity-rules.toml" to [parity] (or to [services.<name>.parity])'
        )
    path = targets.rules_file
    try:
        base = RuleSet.load(path) if path.exists() else RuleSet()
    except RulesError as exc:
        raise click.ClickException(str(exc)) from None
    return path, base


@cli.command("record")
@click.option("--service", help=SERVICE_HELP)
@click.option(
    "--target",
    help="Base URL to send through (e.g. the proxy or the monolith); default with --service: "
    "the manifest's proxy.",
)
@_source_options
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Recording file (.jsonl), appended to.",
)
@click.option("--sample-rate", default=1.0, show_default=True, type=click.FloatRange(0, 1))
@click.option(
    "--max-bytes",
    default=64 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(min=1024),
    help="Rotate the file beyond this size.",
)
@click.option(
    "--redact-header",
    multiple=True,
    help="Extra header to redact (Authorization, Cookie, Set-Cookie, Proxy-Authorization always are).",
)
@click.option(
    "--redact-field",
    multiple=True,
    help="JSON field name or $.path to redact (password and token always are).",
)
def record_cmd(
    service: str | None,
    target: str | None,
    source: _Source,
    out: str,
    sample_rate: float,
    max_bytes: int,
    redact_header: tuple[str, ...],
    redact_field: tuple[str, ...],
) -> None:
    """Send requests through a URL and record the exchanges (redacted) to a JSON Lines file."""
    targets = _Targets.of(service)
    target = target or targets.proxy
    if not target:
        raise click.UsageError("give --target (or --service to record through the proxy)")
    resolver = EndpointResolver(list(targets.endpoints))
    auth = targets.credentials(source.headers, source.auth_command)
    reqs = _requests(targets.source(source), target, resolver, targets, auth)
    redactor = targets.redactor_with(fields=redact_field, headers=(*redact_header, *auth.names()))
    store = RecordingStore(out, sample_rate=sample_rate, max_bytes=max_bytes, redactor=redactor)
    progress = _Progress("record")
    failed = 0
    with authenticated(HttpBackend(target), auth) as backend:
        for n, req in enumerate(reqs, 1):
            try:
                resp = backend.send(req)
            except BackendError as exc:
                failed += 1
                click.echo(f"failed {req}: {exc}", err=True)
                continue
            # the request as sent (credentials included) goes to the redactor, never to disk
            sent = auth.apply(req, auth.current()[1]) if auth else req
            store.record_exchange(sent, resp, endpoint=resolver.resolve(req.method, req.path))
            progress(n, len(reqs), Counter())
    click.echo(f"recorded {store.written} of {len(reqs)} exchanges to {out} ({failed} failed)")
    if failed:
        sys.exit(1)


@cli.command("report")
@click.argument("report_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--html", "html_out", type=click.Path(dir_okay=False), help="Also write the HTML report."
)
@click.option("--threshold", default=0, show_default=True, type=click.IntRange(min=0))
def report_cmd(report_file: str, html_out: str | None, threshold: int) -> None:
    """Render a JSON report (from `kit parity run --json`) as a table and optionally HTML."""
    try:
        report = RunReport.load_json(report_file)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"{report_file}: not a parity report ({exc})") from None
    click.echo(render_table(report))
    if html_out:
        _write_html(report, html_out)
    sys.exit(report.exit_code(threshold))
