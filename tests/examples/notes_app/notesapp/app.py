"""The notes app: `create_app()` reads DATABASE_URL; every /api route but the spec needs
`Authorization: Bearer <token>` (a row of `tokens`). Lists answer `{"data": [...]}`, errors
`{"message": ..., "status": N}`. No readiness route: it serves, or it does not."""

from __future__ import annotations

import os

from flask import Blueprint, Flask, current_app, g, jsonify, request
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import scoped_session, sessionmaker
from werkzeug.exceptions import HTTPException

from notesapp.models import Author, Note, Tag, Token, map_models, note_tags

people = Blueprint("people", __name__, url_prefix="/api")
notebook = Blueprint("notebook", __name__, url_prefix="/api")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def db():
    return current_app.extensions["notes_session"]


def note_json(n: Note) -> dict:
    return {
        "id": n.id,
        "author_id": n.author_id,
        "title": n.title,
        "body": n.body,
        "created_at": n.created_at.isoformat(),
        "tags": sorted(t.label for t in n.tags),
    }


def load_note(note_id: int) -> Note:
    note = db().get(Note, note_id)
    if note is None:
        raise ApiError(404, f"note {note_id} does not exist")
    return note


def own_note(note_id: int) -> Note:
    note = load_note(note_id)
    if note.author_id != g.author_id:
        raise ApiError(403, f"note {note_id} belongs to another author")
    return note


@people.get("/me")
def me():
    author = db().get(Author, g.author_id)
    return jsonify(id=author.id, name=author.name)


@people.get("/authors")
def list_authors():
    rows = db().scalars(select(Author).order_by(Author.id)).all()
    return jsonify(data=[{"id": a.id, "name": a.name} for a in rows])


@notebook.get("/notes")
def list_notes():
    limit = min(max(request.args.get("limit", 20, type=int), 1), 100)
    offset = max(request.args.get("offset", 0, type=int), 0)
    rows = db().scalars(select(Note).order_by(Note.id).limit(limit).offset(offset)).all()
    total = db().scalar(select(func.count()).select_from(Note))
    return jsonify(data=[note_json(n) for n in rows], total=total)


@notebook.get("/notes/<int:note_id>")
def get_note(note_id: int):
    return jsonify(note_json(load_note(note_id)))


@notebook.post("/notes")
def create_note():
    body = request.get_json(silent=True) or {}
    title = body.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ApiError(400, "title is required")
    note = Note(author_id=g.author_id, title=title.strip(), body=str(body.get("body", "")))
    db().add(note)
    db().commit()
    return jsonify(note_json(note)), 201


@notebook.patch("/notes/<int:note_id>")
def update_note(note_id: int):
    note, body = own_note(note_id), request.get_json(silent=True) or {}
    for key in ("title", "body"):
        if isinstance(body.get(key), str):
            setattr(note, key, body[key])
    db().commit()
    return jsonify(note_json(note))


@notebook.delete("/notes/<int:note_id>")
def delete_note(note_id: int):
    db().delete(own_note(note_id))
    db().commit()
    return "", 204


@notebook.put("/notes/<int:note_id>/tags/<label>")
def tag_note(note_id: int, label: str):
    note = own_note(note_id)
    tag = db().scalar(select(Tag).where(Tag.label == label)) or Tag(label=label)
    if tag not in note.tags:
        note.tags.append(tag)
    db().commit()
    return jsonify(note_json(note))


@notebook.delete("/notes/<int:note_id>/tags/<label>")
def untag_note(note_id: int, label: str):
    note = own_note(note_id)
    note.tags = [t for t in note.tags if t.label != label]
    db().commit()
    return jsonify(note_json(note))


@notebook.get("/tags")
def list_tags():
    count = func.count(note_tags.c.note_id)
    rows = db().execute(
        select(Tag.label, count).outerjoin(note_tags).group_by(Tag.id).order_by(Tag.label)
    )
    return jsonify(data=[{"label": label, "notes": n} for label, n in rows])


SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "notes", "version": "2"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {},
}


def create_app() -> Flask:
    app = Flask(__name__)
    url = os.environ["DATABASE_URL"]
    map_models()
    engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    session = scoped_session(sessionmaker(bind=engine, expire_on_commit=False))
    app.extensions["notes_session"] = session
    app.teardown_appcontext(lambda exc: session.remove())

    @app.before_request
    def authenticate():
        if request.path == "/api/spec.json":
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        row = db().get(Token, token) if scheme.lower() == "bearer" and token else None
        if row is None:
            raise ApiError(401, "missing or unknown bearer token")
        g.author_id = row.author_id
        return None

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return jsonify(message=exc.message, status=exc.status), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(message=exc.description, status=exc.code), exc.code

    app.register_blueprint(people)
    app.register_blueprint(notebook)

    @app.get("/api/spec.json")
    def spec():
        paths: dict = {}
        for rule in app.url_map.iter_rules():
            if rule.rule.startswith("/api/") and rule.endpoint != "spec":
                path = rule.rule.replace("<int:", "{").replace("<", "{").replace(">", "}")
                for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                    tag = rule.endpoint.partition(".")[0]
                    paths.setdefault(path, {})[method.lower()] = {"tags": [tag]}
        return jsonify({**SPEC, "paths": paths})

    return app
