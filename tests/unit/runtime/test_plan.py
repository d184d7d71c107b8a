"""What `kit up` runs: apps under gunicorn with keep-alive workers (reusable by the proxy)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from kit.manifest import ManifestError, load_manifest, parse_manifest
from kit.runtime.plan import GUNICORN_KEEP_ALIVE_S, build_specs, gunicorn_argv

ROOT = Path(__file__).resolve().parents[3]


def _flag(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_apps_run_threaded_keep_alive_workers_from_the_manifest() -> None:
    manifest = load_manifest(ROOT / "kit.toml", env={})
    apps = [spec for spec in build_specs(manifest, python="python") if spec.kind == "app"]
    assert [spec.name for spec in apps] == ["monolith", *manifest.services]
    for spec in apps:
        assert _flag(spec.argv, "--worker-class") == "gthread"
        assert _flag(spec.argv, "--workers") == "2"
        assert _flag(spec.argv, "--threads") == "4"
        assert _flag(spec.argv, "--keep-alive") == str(GUNICORN_KEEP_ALIVE_S)
        assert spec.argv[-1].endswith("create_app()")
        assert spec.bind == _flag(spec.argv, "--bind")  # checked free before it starts


def test_threads_setting_is_read_and_validated() -> None:
    data = tomllib.loads((ROOT / "kit.toml").read_text())
    data["monolith"]["threads"] = 8
    manifest = parse_manifest(data, ROOT, ROOT / "kit.toml", {})
    monolith = build_specs(manifest, python="python")[0]
    assert _flag(monolith.argv, "--threads") == "8"
    data["monolith"]["threads"] = 0
    with pytest.raises(ManifestError, match="threads"):
        parse_manifest(data, ROOT, ROOT / "kit.toml", {})


def test_upstream_keep_alive_outlives_the_proxy_idle_pool() -> None:
    from strangler_proxy.fastpath.upstream import UPSTREAM_IDLE_S

    assert GUNICORN_KEEP_ALIVE_S > UPSTREAM_IDLE_S
    argv = gunicorn_argv("py", "app:create()", "127.0.0.1:1", 3, 2, "--name", "x")
    assert argv[:3] == ("py", "-m", "gunicorn") and argv[-3:] == ("--name", "x", "app:create()")
    assert "--reuse-port" in argv  # each worker accepts on its own socket


def _app_manifest(keys: str, service_keys: str = "") -> object:
    data = tomllib.loads((ROOT / "kit.toml").read_text())
    data["monolith"].update(tomllib.loads(keys))
    data["services"]["catalog"].update(tomllib.loads(service_keys))
    return parse_manifest(data, ROOT, ROOT / "kit.toml", {})


def test_an_app_runs_its_own_command_interpreter_folder_and_environment(tmp_path: Path) -> None:
    manifest = _app_manifest(
        f"""python = "{tmp_path}/venv/bin/python"
cwd = "{tmp_path}"
command = ["{{python}}", "-m", "waitress", "--listen={{bind}}", "--threads={{threads}}", "{{app}}"]
env = {{ SECRET_KEY = "s" }}
database_env = "DATABASE_URL"
ready = {{ path = "/health", status = 204 }}
ready_timeout = 9
"""
    )
    monolith = build_specs(manifest, python="python")[0]  # type: ignore[arg-type]
    assert monolith.argv == (
        f"{tmp_path}/venv/bin/python", "-m", "waitress", "--listen=127.0.0.1:8000",
        "--threads=4", "monolith.app:create_app()",
    )  # fmt: skip
    assert monolith.cwd == str(tmp_path)
    assert monolith.env["SECRET_KEY"] == "s"
    assert monolith.env["DATABASE_URL"].endswith("monolith.db")
    assert "MONOLITH_DATABASE_URL" not in monolith.env
    assert monolith.env["PYTHONPATH"].split(":")[0] == str(tmp_path)
    assert (monolith.ready_url, monolith.ready_status) == ("http://127.0.0.1:8000/health", 204)
    assert monolith.ready_timeout_s == 9


def test_by_default_an_app_is_ready_when_its_port_accepts_and_external_ones_are_not_run() -> None:
    manifest = _app_manifest("external = true", "ready = { tcp = true }")
    specs = {s.name: s for s in build_specs(manifest, python="python")}  # type: ignore[arg-type]
    assert specs["monolith"].external and specs["monolith"].argv == ()
    assert specs["monolith"].ready_url == "http://127.0.0.1:8000/readyz"
    assert (specs["catalog"].ready_url, specs["catalog"].ready_status) == (
        "tcp://127.0.0.1:8001",
        None,
    )
    assert specs["catalog"].env["PYTHONPATH"].split(":")[0] == str(ROOT)
    assert specs["catalog"].env["CATALOG_DATABASE_URL"].endswith("catalog.db")
