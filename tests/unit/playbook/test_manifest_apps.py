"""The keys that say how each app runs (python/venv, cwd, command, env, database_env, ready,
external, seed, migrations) parse into typed specs, and every mistake is named precisely."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from kit.manifest import ManifestError, MigrationsSpec, ReadyCheck, load_manifest
from tests.playbook_shop import write_manifest

ROOT = Path(__file__).resolve().parents[3]
MONO_APP = 'app = "monolith.app:create_app()"\n'


def _with(tmp_path: Path, monolith_keys: str, drop: str = "") -> Path:
    path = write_manifest(tmp_path)
    text = path.read_text().replace(f'cwd = "{ROOT}"\n', "", 1)  # the monolith's: default
    if drop:
        text = text.replace(drop, "", 1)
    path.write_text(text.replace("[monolith]\n", "[monolith]\n" + monolith_keys, 1))
    return path


def _problems(tmp_path: Path, monolith_keys: str, drop: str = "") -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(_with(tmp_path, monolith_keys, drop))
    return [str(p) for p in info.value.problems]


def test_an_app_without_run_keys_runs_with_the_kits_python_from_the_manifest_folder(
    tmp_path: Path,
) -> None:
    m = load_manifest(_with(tmp_path, ""))
    rt = m.monolith.runtime
    assert rt.python == sys.executable
    assert rt.cwd == tmp_path
    assert rt.env == {"MONOLITH_DATABASE_URL": m.monolith.database_url}
    assert m.services["catalog"].database_variable == "CATALOG_DATABASE_URL"
    assert m.monolith.ready == ReadyCheck()  # TCP: works for an app with no readiness route
    assert m.monolith.ready_target == f"tcp://{m.monolith.url.removeprefix('http://')}"
    assert (m.monolith.command, m.monolith.seed) == (None, None)
    assert m.monolith.external is False


def test_run_keys_resolve_relative_paths_from_the_manifest_folder(tmp_path: Path) -> None:
    keys = """venv = "app/.venv"
cwd = "app"
command = ["{python}", "-m", "waitress", "--listen={bind}", "{app}"]
env = { FLASK_DEBUG = "0", SECRET = "x" }
database_env = "DATABASE_URL"
ready = { path = "/health", status = 204 }
ready_timeout = 5
seed = ["{python}", "seed.py", "{database_url}"]
"""
    m = load_manifest(_with(tmp_path, keys))
    mono = m.monolith
    assert mono.python == str(tmp_path / "app/.venv/bin/python")
    assert mono.cwd == tmp_path / "app"
    assert mono.command == ("{python}", "-m", "waitress", "--listen={bind}", "{app}")
    assert mono.runtime.env == {
        "FLASK_DEBUG": "0",
        "SECRET": "x",
        "DATABASE_URL": mono.database_url,
    }
    assert mono.ready == ReadyCheck(path="/health", status=204, timeout_s=5.0)
    assert mono.ready_target == mono.url + "/health"
    assert mono.seed == ("{python}", "seed.py", "{database_url}")


def _without_monolith_migrations(path: Path) -> str:
    """The shop manifest's text without its own [monolith.migrations] table."""
    return re.sub(r"\[monolith\.migrations\][^\[]*", "", path.read_text())


def test_migrations_name_the_apps_own_alembic_folder_and_version_table(tmp_path: Path) -> None:
    keys = '[monolith.migrations]\nscript_location = "alembic"\nversion_table = "av"\n'
    path = write_manifest(tmp_path)
    path.write_text(_without_monolith_migrations(path).replace("[proxy]", keys + "\n[proxy]", 1))
    m = load_manifest(path)
    assert m.monolith.migrations == MigrationsSpec(
        script_location=tmp_path / "alembic", version_table="av"
    )
    path.write_text(path.read_text().replace('script_location = "alembic"', 'ini = "a.ini"'))
    assert load_manifest(path).monolith.migrations == MigrationsSpec(
        ini=tmp_path / "a.ini", version_table="av"
    )


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ('python = "p"\nvenv = "v"\n', "monolith.venv: give either python or venv, not both"),
        ('command = "gunicorn app"\n', "monolith.command: must be a non-empty list of strings"),
        ('command = ["{python}", "{prot}"]\n', "monolith.command: unknown placeholder(s) prot"),
        ('seed = ["x", "{url}"]\n', "monolith.seed: unknown placeholder(s) url"),
        ("env = { A = 1 }\n", "monolith.env: must be a table of NAME"),
        ('env = { "A B" = "1" }\n', "monolith.env: 'A B' is not an environment variable name"),
        ('database_env = "db-url"\n', "monolith.database_env: must be an environment variable"),
        ('ready = { path = "readyz" }\n', "monolith.ready.path: must be a path starting with '/'"),
        ('ready = { path = "/r", status = 999 }\n', "monolith.ready.status: must be an HTTP"),
        ('ready = { tcp = true, path = "/r" }\n', "monolith.ready: give either path"),
        ("ready = { tcp = false }\n", "monolith.ready.tcp: must be true"),
        ("ready = {}\n", "monolith.ready: needs path"),
        ('ready = { url = "/r" }\n', "monolith.ready: unknown key(s) url"),
        ("ready_timeout = 0\n", "monolith.ready_timeout: must be between"),
        ('external = "yes"\n', "monolith.external: must be true or false"),
        ('openapi = "openapi.json"\n', "monolith.openapi: must be a path"),
    ],
)
def test_each_bad_run_key_is_named_with_its_place(tmp_path: Path, keys: str, expected: str) -> None:
    problems = _problems(tmp_path, keys)
    assert any(p.startswith(expected) for p in problems), problems


def test_bad_migrations_tables_are_named(tmp_path: Path) -> None:
    path = write_manifest(tmp_path)
    both = '[monolith.migrations]\nscript_location = "a"\nini = "b"\nversion_tabel = "x"\n'
    path.write_text(_without_monolith_migrations(path).replace("[proxy]", both + "\n[proxy]", 1))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    problems = [str(p) for p in info.value.problems]
    assert "monolith.migrations.version_tabel: unknown key" in problems
    assert any(p.startswith("monolith.migrations: give exactly one of") for p in problems)


def test_an_app_needs_app_or_command_unless_the_team_runs_it(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "", drop=MONO_APP)
    assert any(p.startswith("monolith.app: is required to run the app") for p in problems)
    m = load_manifest(_with(tmp_path, "external = true\n", drop=MONO_APP))
    assert m.monolith.external and m.monolith.app is None
