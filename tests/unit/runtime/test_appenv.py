"""App-side scripts run in the app's interpreter, from the app's folder, and answer JSON:
the kit learns an app's url_map and tables without importing the app itself."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kit.appenv import AppRuntime, AppScriptError, process_env, run_app_script

APP = """
import os
from flask import Blueprint, Flask
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table

print("noise on stdout while importing")
metadata = MetaData()
Table("tags", metadata, Column("id", Integer, primary_key=True), Column("label", String(20)))
Table("post_tags", metadata,  # an association table without a primary key
      Column("post_id", Integer, nullable=False), Column("tag_id", ForeignKey("tags.id")))


def create_app():
    app = Flask("tiny")
    bp = Blueprint("posts", __name__)
    bp.add_url_rule("/posts/<int:pid>", "one", lambda pid: "", methods=["GET", "PATCH"])
    app.register_blueprint(bp)
    app.add_url_rule("/ping", "ping", lambda: os.environ["TINY_DATABASE"])
    return app
"""


@pytest.fixture
def tiny(tmp_path: Path) -> AppRuntime:
    (tmp_path / "tinyapp").mkdir()
    (tmp_path / "tinyapp" / "__init__.py").write_text("")
    (tmp_path / "tinyapp" / "web.py").write_text(APP)
    return AppRuntime("tiny", sys.executable, tmp_path, {"TINY_DATABASE": "sqlite://"})


def test_url_map_lists_rules_methods_endpoints_and_blueprints(tiny: AppRuntime) -> None:
    answer = run_app_script(tiny, "introspect.py", "url_map", "tinyapp.web:create_app()")
    rules = {r["rule"]: r for r in answer["rules"]}
    assert rules["/posts/<int:pid>"] == {
        "rule": "/posts/<int:pid>",
        "methods": ["GET", "HEAD", "OPTIONS", "PATCH"],
        "endpoint": "posts.one",
        "blueprint": "posts",
    }
    assert rules["/ping"]["blueprint"] is None


def test_metadata_lists_tables_columns_and_primary_keys(tiny: AppRuntime) -> None:
    answer = run_app_script(tiny, "introspect.py", "metadata", "tinyapp.web:metadata")
    tables = {t["name"]: t for t in answer["tables"]}
    assert [t["name"] for t in answer["tables"]] == ["tags", "post_tags"]  # parents first
    assert tables["tags"]["primary_key"] == ["id"]
    assert tables["post_tags"]["primary_key"] == []
    assert [c["name"] for c in tables["post_tags"]["columns"]] == ["post_id", "tag_id"]
    assert tables["tags"]["columns"][1] == {
        "name": "label",
        "type": "VARCHAR(20)",
        "nullable": True,
        "primary_key": False,
    }


def test_a_module_the_app_lacks_is_named_with_the_interpreter_and_folder(
    tiny: AppRuntime,
) -> None:
    (tiny.cwd / "tinyapp" / "broken.py").write_text("import flask_login_not_here\n")
    with pytest.raises(AppScriptError) as info:
        run_app_script(tiny, "introspect.py", "url_map", "tinyapp.broken:create_app()")
    message = str(info.value)
    assert "No module named 'flask_login_not_here'" in message
    assert sys.executable in message and str(tiny.cwd) in message


def test_a_missing_interpreter_is_named(tiny: AppRuntime, tmp_path: Path) -> None:
    gone = AppRuntime("tiny", str(tmp_path / "venv/bin/python"), tiny.cwd)
    with pytest.raises(AppScriptError, match=r"venv/bin/python does not exist"):
        run_app_script(gone, "introspect.py", "url_map", "tinyapp.web:create_app()")


def test_the_apps_folder_comes_first_on_pythonpath_and_its_env_is_added(tmp_path: Path) -> None:
    rt = AppRuntime("a", "python", tmp_path, {"A_DATABASE_URL": "sqlite://"})
    env = process_env(rt, {"PYTHONPATH": "/elsewhere", "HOME": "/h"})
    assert env == {
        "PYTHONPATH": f"{tmp_path}:/elsewhere",
        "HOME": "/h",
        "A_DATABASE_URL": "sqlite://",
    }


def test_app_side_scripts_import_only_the_standard_library_and_the_apps_libraries() -> None:
    # the import-linter contract lists kit's modules; this also catches a module added later
    import ast

    from kit.appenv import APPSIDE_DIR

    allowed = set(sys.stdlib_module_names) | {"flask", "werkzeug", "sqlalchemy", "alembic"}
    for script in APPSIDE_DIR.glob("*.py"):
        tree = ast.parse(script.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed | {"__future__"}, f"{script.name}: {name}"
