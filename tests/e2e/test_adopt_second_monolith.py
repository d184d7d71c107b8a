"""The kit adopts a monolith it has never seen: the notes app (tests/examples/notes_app), built
unlike the shop, in its OWN virtualenv, with the kit installed FROM ITS WHEEL in another.

From the kit's `kit` executable, in a project folder holding a copy of the app: `kit init`,
`kit extract`, then the test writes what a team writes (the new service's endpoints and a few
manifest lines, counted below), `kit up`, `kit advance` through every step to `retire` under
traffic through the proxy (bearer tokens, reads and writes, the keyless link table included),
`kit rollback` back to the start, a clean `kit cdc verify`, `kit down`. Zero failed requests.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from kit.runtime.procs import RunDir
from kit.runtime.supervisor import stop_all
from kitcore.net import free_port
from tests.fixtures.venvs import NOTES_APP

T0 = time.monotonic()
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

SERVICE = "notebook"
TABLES = "notes,tags,note_tags"
ENDPOINTS = ",".join(
    [
        "GET /api/notes", "POST /api/notes", "GET /api/notes/<int:note_id>",
        "PATCH /api/notes/<int:note_id>", "DELETE /api/notes/<int:note_id>",
        "PUT /api/notes/<int:note_id>/tags/<label>",
        "DELETE /api/notes/<int:note_id>/tags/<label>", "GET /api/tags",
    ]
)  # fmt: skip
AUTHORS, SEEDED_NOTES = 40, 60
STEPS = ["schema", "capture", "verify", "shadow", "canary", "canary", "reads", "writes", "retire"]
PARITY_GATED = {"shadow", "canary", "reads"}
# the monolith's own tables, its own version table, and the kit's capture bookkeeping
NOTES_TABLES = {"authors", "tokens", "notes", "tags", "note_tags", "notes_schema_version"}

# What the team writes: the service's endpoints, in place of the 501 stubs `kit extract` wrote.
VIEWS = """    # ---- the endpoints taken over from the notes monolith (what the team writes) ----
    import json
    import time
    import urllib.error
    import urllib.request
    from datetime import datetime

    from flask import g, request
    from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text
    from sqlalchemy import delete, func, insert, select, update
    from werkzeug.exceptions import HTTPException

    md = MetaData()
    notes = Table(
        "notes", md, Column("id", Integer, primary_key=True), Column("author_id", Integer),
        Column("title", String), Column("body", Text), Column("created_at", DateTime),
    )  # fmt: skip
    tags = Table("tags", md, Column("id", Integer, primary_key=True), Column("label", String))
    note_tags = Table("note_tags", md, Column("note_id", Integer), Column("tag_id", Integer))
    monolith, authors_by_token = os.environ["NOTES_MONOLITH_URL"], {}

    class Refused(Exception):
        def __init__(self, status: int, message: str) -> None:
            self.status, self.message = status, message

    @app.errorhandler(Refused)
    def refused(exc: Refused):
        return jsonify(message=exc.message, status=exc.status), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(message=exc.description, status=exc.code), exc.code

    @app.before_request
    def authenticate() -> None:  # tokens stay in the monolith: ask it who this is
        if request.path in ("/healthz", "/readyz"):
            return
        header = request.headers.get("Authorization", "")
        known = authors_by_token.get(header)
        if known is None or known[0] < time.monotonic():
            req = urllib.request.Request(monolith + "/api/me", headers={"Authorization": header})
            try:
                with urllib.request.urlopen(req, timeout=10) as answer:
                    known = (time.monotonic() + 60, json.load(answer)["id"])
            except urllib.error.HTTPError as exc:
                raise Refused(401, "missing or unknown bearer token") from exc
            authors_by_token[header] = known
        g.author_id = known[1]

    def note_json(conn, row) -> dict:
        labels = conn.scalars(
            select(tags.c.label).join(note_tags, note_tags.c.tag_id == tags.c.id)
            .where(note_tags.c.note_id == row.id).order_by(tags.c.label)
        )  # fmt: skip
        return {
            "id": row.id, "author_id": row.author_id, "title": row.title, "body": row.body,
            "created_at": row.created_at.isoformat(), "tags": list(labels),
        }  # fmt: skip

    def load(conn, note_id: int, own: bool = False):
        row = conn.execute(select(notes).where(notes.c.id == note_id)).first()
        if row is None:
            raise Refused(404, f"note {note_id} does not exist")
        if own and row.author_id != g.author_id:
            raise Refused(403, f"note {note_id} belongs to another author")
        return row

    @app.get("/api/notes")
    def list_notes():
        limit = min(max(request.args.get("limit", 20, type=int), 1), 100)
        offset = max(request.args.get("offset", 0, type=int), 0)
        with engine.connect() as conn:
            rows = conn.execute(select(notes).order_by(notes.c.id).limit(limit).offset(offset))
            data = [note_json(conn, r) for r in rows.all()]
            total = conn.scalar(select(func.count()).select_from(notes))
        return jsonify(data=data, total=total)

    @app.get("/api/notes/<int:note_id>")
    def get_note(note_id: int):
        with engine.connect() as conn:
            return jsonify(note_json(conn, load(conn, note_id)))

    @app.post("/api/notes")
    def create_note():
        body = request.get_json(silent=True) or {}
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise Refused(400, "title is required")
        values = {"author_id": g.author_id, "title": title.strip(), "body": str(body.get("body", "")),
                  "created_at": datetime.now().replace(microsecond=0)}  # fmt: skip
        with engine.begin() as conn:
            new_id = conn.execute(insert(notes).values(**values)).inserted_primary_key[0]
            return jsonify(note_json(conn, load(conn, new_id))), 201

    @app.patch("/api/notes/<int:note_id>")
    def update_note(note_id: int):
        body = request.get_json(silent=True) or {}
        changes = {k: body[k] for k in ("title", "body") if isinstance(body.get(k), str)}
        with engine.begin() as conn:
            load(conn, note_id, own=True)
            if changes:
                conn.execute(update(notes).where(notes.c.id == note_id).values(**changes))
            return jsonify(note_json(conn, load(conn, note_id)))

    @app.delete("/api/notes/<int:note_id>")
    def delete_note(note_id: int):
        with engine.begin() as conn:
            load(conn, note_id, own=True)
            conn.execute(delete(note_tags).where(note_tags.c.note_id == note_id))
            conn.execute(delete(notes).where(notes.c.id == note_id))
        return "", 204

    @app.put("/api/notes/<int:note_id>/tags/<label>")
    def tag_note(note_id: int, label: str):
        with engine.begin() as conn:
            row = load(conn, note_id, own=True)
            tag_id = conn.scalar(select(tags.c.id).where(tags.c.label == label))
            if tag_id is None:
                tag_id = conn.execute(insert(tags).values(label=label)).inserted_primary_key[0]
            link = (note_tags.c.note_id == note_id) & (note_tags.c.tag_id == tag_id)
            if conn.scalar(select(func.count()).select_from(note_tags).where(link)) == 0:
                conn.execute(insert(note_tags).values(note_id=note_id, tag_id=tag_id))
            return jsonify(note_json(conn, row))

    @app.delete("/api/notes/<int:note_id>/tags/<label>")
    def untag_note(note_id: int, label: str):
        with engine.begin() as conn:
            row = load(conn, note_id, own=True)
            tag_ids = select(tags.c.id).where(tags.c.label == label).scalar_subquery()
            link = (note_tags.c.note_id == note_id) & (note_tags.c.tag_id == tag_ids)
            conn.execute(delete(note_tags).where(link))
            return jsonify(note_json(conn, row))

    @app.get("/api/tags")
    def list_tags():
        count = func.count(note_tags.c.note_id)
        query = select(tags.c.label, count).outerjoin(note_tags, note_tags.c.tag_id == tags.c.id)
        with engine.connect() as conn:
            rows = conn.execute(query.group_by(tags.c.id).order_by(tags.c.label)).all()
        return jsonify(data=[{"label": label, "notes": n} for label, n in rows])
"""


def manifest_edits(ports: dict[str, int]) -> list[tuple[str, str]]:
    """(after this line, insert these lines): every manifest line the team writes by hand.
    The proxy's two addresses are this test's free ports; the service's one variable is where
    its monolith answers `/api/me` (tokens stay in the monolith)."""
    return [
        (
            "[proxy]",
            f'listen = "127.0.0.1:{ports["listen"]}"\nadmin = "127.0.0.1:{ports["admin"]}"',
        ),
        (
            f"[services.{SERVICE}]",
            f'env = {{ NOTES_MONOLITH_URL = "http://127.0.0.1:{ports["monolith"]}" }}',
        ),
    ]


@dataclass
class Traffic:
    """Client threads through the proxy, each acting for random authors (bearer tokens).
    Every request states the statuses a correct notes app answers; anything else, a
    connection error or a malformed body is a failure."""

    base: str
    clients: int = 3
    settle_s: float = 2.5
    writes: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    sent: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True, name=f"notes-client-{i}")
            for i in range(self.clients)
        ]
        for t in threads:
            t.start()
        return threads

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def _client(self, index: int) -> None:
        rng = random.Random(index)
        own: list[tuple[int, str, float]] = []  # (note id, its author's token, created at)
        with httpx.Client(base_url=self.base, timeout=20.0, trust_env=False) as http:
            while not self.stop.is_set():
                token = f"token-{rng.randint(1, AUTHORS)}"
                auth = {"Authorization": f"Bearer {token}"}
                settled = [n for n in own if time.monotonic() - n[2] > self.settle_s]
                roll = rng.random()
                if self.writes.is_set() and roll < 0.35:
                    self._write(http, rng, own, settled, token, auth)
                elif roll < 0.55:
                    self._call(http, "list", "GET", f"/api/notes?limit=10&offset={rng.randint(0, 50)}",
                               {200}, auth, envelope="data")  # fmt: skip
                elif roll < 0.75:
                    self._call(
                        http,
                        "get",
                        "GET",
                        f"/api/notes/{rng.randint(1, SEEDED_NOTES)}",
                        {200},
                        auth,
                    )
                elif roll < 0.82:
                    self._call(http, "tags", "GET", "/api/tags", {200}, auth, envelope="data")
                elif roll < 0.86:
                    self._call(http, "missing", "GET", "/api/notes/999999", {404}, auth, error=True)
                elif roll < 0.90:
                    self._call(http, "no_token", "GET", "/api/notes", {401}, {}, error=True)
                elif roll < 0.95:
                    self._call(http, "me", "GET", "/api/me", {200}, auth)
                elif settled:
                    note_id, owner, _ = rng.choice(settled)
                    self._call(http, "get_own", "GET", f"/api/notes/{note_id}", {200},
                               {"Authorization": f"Bearer {owner}"})  # fmt: skip
                time.sleep(0.01)

    def _write(self, http, rng, own, settled, token, auth) -> None:
        roll = rng.random()
        if roll < 0.3 or not settled:
            body = {"title": f"t{rng.randint(0, 10**6)}", "body": "written under migration"}
            r = self._call(http, "create", "POST", "/api/notes", {201}, auth, json=body)
            if r is not None and r.status_code == 201:
                own.append((r.json()["id"], token, time.monotonic()))
            return
        note = rng.choice(settled)
        note_id, owner_auth = note[0], {"Authorization": f"Bearer {note[1]}"}
        label = rng.choice(["work", "home", "idea", f"new{rng.randint(0, 20)}"])
        if roll < 0.5:
            self._call(http, "tag", "PUT", f"/api/notes/{note_id}/tags/{label}", {200}, owner_auth)
        elif roll < 0.65:
            self._call(
                http, "untag", "DELETE", f"/api/notes/{note_id}/tags/{label}", {200}, owner_auth
            )
        elif roll < 0.8:
            self._call(http, "patch", "PATCH", f"/api/notes/{note_id}", {200}, owner_auth,
                       json={"body": f"edited {rng.random()}"})  # fmt: skip
        elif roll < 0.9:
            self._call(http, "bad_create", "POST", "/api/notes", {400}, auth, json={}, error=True)
        else:
            if self._call(http, "delete", "DELETE", f"/api/notes/{note_id}", {204}, owner_auth):
                own.remove(note)

    def _call(self, http, op, method, path, ok, headers, *, envelope=None, error=False, json=None):
        with self.lock:
            self.sent[op] += 1
        try:
            r = http.request(method, path, headers=headers, json=json)
        except httpx.HTTPError as exc:
            return self._fail(f"{op} {method} {path}: {exc.__class__.__name__}: {exc}")
        if r.status_code not in ok:
            return self._fail(f"{op} {method} {path}: {r.status_code} {r.text[:200]}")
        if envelope and not isinstance(r.json().get(envelope), list):
            return self._fail(f"{op} {method} {path}: no {envelope!r} list in {r.text[:200]}")
        if error and set(r.json()) != {"message", "status"}:
            return self._fail(f"{op} {method} {path}: error body {r.text[:200]}")
        return r

    def _fail(self, text: str) -> None:
        with self.lock:
            self.failures.append(f"{time.strftime('%H:%M:%S')} {text}")
        return None


class Project:
    """The team's project folder: a copy of the app, the manifest, the kit's executable."""

    def __init__(self, folder: Path, kit_venv: Path, app_venv: Path) -> None:
        self.folder, self.kit_bin, self.app_venv = folder, kit_venv / "bin" / "kit", app_venv
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "PYTHON"))}
        self.env["KIT_MANIFEST"] = str(folder / "kit.toml")
        self.log: list[str] = []

    def kit(
        self, *args: str, ok: tuple[int, ...] = (0,), timeout: float = 180
    ) -> subprocess.CompletedProcess:
        started = time.monotonic()
        done = subprocess.run(
            [str(self.kit_bin), *args], cwd=self.folder, env=self.env, capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip
        print(f"  kit {' '.join(args)[:60]} -> {done.returncode} ({time.monotonic() - started:.1f}s)"
              f" at {time.monotonic() - T0:.0f}s")  # fmt: skip
        self.log.append(f"$ kit {' '.join(args)}  -> {done.returncode} "
                        f"({time.monotonic() - started:.1f}s)\n{done.stdout}{done.stderr}")  # fmt: skip
        assert done.returncode in ok, self.report()
        return done

    def report(self) -> str:
        logs = []
        for path in sorted((self.folder / "var" / "log").glob("*.log")):
            logs.append(f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-25:]))
        return "\n".join(self.log[-12:] + logs)

    def status(self) -> dict:
        return json.loads(self.kit("status", "--json", "--audit", "0").stdout)

    def service_state(self) -> tuple[str | None, str]:
        (svc,) = [s for s in self.status()["services"] if s["service"] == SERVICE]
        return svc["step"], svc["status"]


def _prepare_app(folder: Path, app_venv: Path) -> str:
    """The team's app as it is before the kit: its code, its database at its own Alembic head
    (its own tool, its own venv), seeded."""
    shutil.copytree(NOTES_APP, folder / "notes", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "var").mkdir()
    url = f"sqlite:///{folder / 'var' / 'notes.db'}"
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "DATABASE_URL": url}
    for argv in (["alembic", "upgrade", "head"],
                 ["python", "-m", "notesapp.seed", "--authors", str(AUTHORS), "--notes", str(SEEDED_NOTES)]):  # fmt: skip
        subprocess.run([str(app_venv / "bin" / argv[0]), *argv[1:]], cwd=folder / "notes", env=env,
                       check=True, capture_output=True)  # fmt: skip
    return url


def _edit_manifest(path: Path, edits: list[tuple[str, str]]) -> int:
    text, written = path.read_text(), 0
    for anchor, lines in edits:
        assert f"\n{anchor}\n" in text, anchor
        text = text.replace(f"\n{anchor}\n", f"\n{anchor}\n{lines}\n", 1)
        written += len(lines.splitlines())
    path.write_text(text)
    return written


def _write_views(service_py: Path) -> int:
    """Replace the scaffold's 501 stubs with the endpoints; returns the lines written."""
    code = service_py.read_text()
    start, end = code.index("\n    @app.route("), code.index("\n    return app")
    service_py.write_text(code[:start] + "\n" + VIEWS.rstrip() + "\n" + code[end:])
    return len([ln for ln in VIEWS.splitlines() if ln.strip()])


def _advance_until_done(project: Project, step: str, patience_s: float = 90.0) -> str:
    """`kit advance` until it runs `step` (refusals, e.g. too few parity samples yet, are
    retried while traffic flows); returns its output."""
    deadline = time.monotonic() + patience_s
    while True:
        done = project.kit("advance", SERVICE, ok=(0, 2))
        if done.returncode == 0:
            assert project.service_state() == (step, "done"), project.report()
            return done.stdout
        assert time.monotonic() < deadline, f"{step} refused for {patience_s}s\n{project.report()}"
        time.sleep(1.0)


def test_the_kit_adopts_a_monolith_it_has_never_seen_to_retire_and_back(
    tmp_path: Path, notes_app_venv: Path, kit_venv_path: Path
) -> None:
    started = time.monotonic()
    folder = tmp_path / "project"
    folder.mkdir()
    url = _prepare_app(folder, notes_app_venv)
    project = Project(folder, kit_venv_path, notes_app_venv)
    ports = {name: free_port() for name in ("monolith", "service", "listen", "admin")}
    rundir = RunDir(folder / "var" / "run", folder / "var" / "log")
    try:
        # 1. the kit reads the app (url_map in the app's venv, tables by reflection)
        project.kit(
            "init", "--app", "notesapp.app:create_app()", "--venv", str(notes_app_venv),
            "--cwd", "notes", "--database-url", "sqlite:///var/notes.db",
            "--database-env", "DATABASE_URL", "--url", f"http://127.0.0.1:{ports['monolith']}",
        )  # fmt: skip
        manifest = (folder / "kit.toml").read_text()
        assert 'ready = { path = "/api/spec.json", status = 200 }' in manifest  # no /readyz
        assert 'ini = "notes/alembic.ini"' in manifest and '"notes_schema_version"' in manifest
        assert "note_tags  NO PRIMARY KEY" in manifest
        # 2. ... and scaffolds the service
        project.kit(
            "extract", SERVICE, "--tables", TABLES, "--key", "note_tags=note_id,tag_id",
            "--endpoints", ENDPOINTS, "--port", str(ports["service"]),
        )  # fmt: skip
        # 3. what the team writes: the endpoints, and these manifest lines (mapping: none)
        views_lines = _write_views(folder / "services" / SERVICE / f"{SERVICE}_service.py")
        manifest_lines = _edit_manifest(folder / "kit.toml", manifest_edits(ports))
        mapping = folder / "services" / SERVICE / "mapping.toml"
        mapping_before = mapping.read_text()
        project.kit("manifest", "check", "--structure-only")
        print(f"\nthe team wrote: {views_lines} lines of endpoints, {manifest_lines} manifest "
              "lines, 0 mapping lines")  # fmt: skip

        # 4. everything up, traffic through the proxy for the whole migration
        project.kit("up", timeout=240)
        traffic = Traffic(f"http://127.0.0.1:{ports['listen']}")
        threads = traffic.start()
        contract = None
        try:
            traffic.writes.set()
            time.sleep(2.0)  # rows written before capture: its snapshot carries them
            for step in STEPS:
                # writes flow through every step (drains fence at what was committed when they
                # start) except while the parity gates compare rows (shadow .. reads): a row
                # changed a moment ago differs by the CDC lag; see docs/adopting.md
                if step in PARITY_GATED:
                    traffic.writes.clear()
                else:
                    traffic.writes.set()
                out = _advance_until_done(project, step)
                if step == "writes":  # writes through the service, reverse CDC to the monolith
                    traffic.writes.set()
                    time.sleep(4.0)
                    traffic.writes.clear()
                    time.sleep(3.0)  # the writes in flight arrive on both sides
                    verify = project.kit("cdc", "verify", SERVICE, ok=(0, 1))
                if step == "retire":
                    contract = Path(re.search(r"contract revision written to (\S+)", out)[1])
                    contract_text = contract.read_text()
                    traffic.writes.set()
            assert traffic.sent["create"] > 0 and traffic.sent["tag"] > 0, traffic.sent
            traffic.writes.set()
            while project.service_state()[0] is not None:
                project.kit("rollback", SERVICE)  # under writes, rollbacks of drains included
            time.sleep(1.0)  # the last writes through the monolith, captured after rollback
        finally:
            traffic.stop.set()
            for t in threads:
                t.join(timeout=30)
        status = project.status()
        db_current = project.kit("db", "current", "monolith").stdout
        project.kit("down")
        assert rundir.records() == [], project.report()
    finally:
        stop_all(rundir, timeout_s=5)

    # zero failed requests, over reads and writes, the link table included
    summary = f"{traffic.total} requests {dict(traffic.sent)}; failures: {traffic.failures[:10]}"
    print(summary, f"\nelapsed {time.monotonic() - started:.0f}s")
    assert traffic.failures == [], summary + "\n" + project.report()
    assert traffic.total > 300, summary
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # back at the start: every endpoint of the service routed to the monolith
    assert {e["mode"] for e in status["endpoints"] if e["service"] == SERVICE} == {"monolith"}
    # the monolith's own Alembic history was used: retire's contract chains onto its head,
    # and its database holds its own tables only (no shop table, no kit version table)
    assert (
        "down_revision = 'nt02_tags'" in contract_text
        or 'down_revision = "nt02_tags"' in contract_text
    )
    assert "nt02_tags (head: nt02_tags" in db_current
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {n for n in names if not n.startswith(("_cdc", "sqlite_"))} == NOTES_TABLES, names
    assert mapping.read_text() == mapping_before
    assert (views_lines, manifest_lines) == (views_lines, 3)
