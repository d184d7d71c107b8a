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
