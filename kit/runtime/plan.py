"""What `kit up` runs, derived from the manifest: one `ProcessSpec` per process.

- the monolith and every service under gunicorn (gthread workers with keep-alive; workers and
  threads from the manifest; the database URL in `<NAME>_DATABASE_URL`), health-checked on
  `/readyz`;
- the proxy with its admin API (`kit worker proxy`: the manifest's upstreams and routes,
  playbook guards, the parity sink), health-checked on the admin `/healthz`;
- the CDC watchdog, which starts the CDC workers the playbook state asks for.

Every process runs in the manifest's folder, so relative paths mean the same to all.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

from kit.manifest import Manifest
from kit.runtime.procs import ProcessSpec, RunDir


def run_dir(m: Manifest) -> RunDir:
    """`var/run` (pid records) and `var/log` (one log per process) under the manifest's var_dir."""
    return RunDir(m.kit.var_dir / "run", m.kit.var_dir / "log")


def bind_of(url: str) -> str:
    """`http://127.0.0.1:8001` → `127.0.0.1:8001` (gunicorn's --bind)."""
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise ValueError(f"an app URL needs an explicit host and port, got {url!r}")
    return f"{parts.hostname}:{parts.port}"


#: Seconds gunicorn keeps an idle connection open. Longer than any proxy's idle pool timeout
#: (strangler_proxy drops idle upstream connections after 30 s), so the proxy, not gunicorn,
#: closes idle pooled connections and never writes into one gunicorn is closing.
GUNICORN_KEEP_ALIVE_S = 75


def gunicorn_argv(
    python: str, app: str, bind: str, workers: int, threads: int, *extra: str
) -> tuple[str, ...]:
    """gunicorn with threaded (gthread) workers, HTTP keep-alive and a socket per worker.

    Why not gunicorn's default sync workers: they close the connection after every answer, so
    a proxy in front pays a new TCP connection and a gunicorn accept per request; with keep-alive
    the proxy's pooled upstream connections are reused (docs/proxy.md, docs/benchmarks.md).
    Why `--reuse-port`: each worker listens on its own socket and the kernel spreads new
    connections over them. With one shared socket the workers race for every accept, and a
    burst of connections (a proxy filling its pool) can all land on one worker, which then
    serves everything for as long as the pool keeps them while the other idles. The price: a
    second server on the same port would not fail to bind, so the supervisor checks the port
    is free before starting (`ProcessSpec.bind`).
    """
    return (
        python, "-m", "gunicorn", "--workers", str(workers), "--worker-class", "gthread",
        "--threads", str(threads), "--keep-alive", str(GUNICORN_KEEP_ALIVE_S), "--reuse-port",
        "--bind", bind, *extra, app,
    )  # fmt: skip


def gunicorn_spec(
    name: str,
    app: str,
    url: str,
    workers: int,
    env: dict[str, str],
    cwd: Path,
    python: str,
    threads: int = 4,
) -> ProcessSpec:
    """One app under gunicorn (`gunicorn_argv`), ready when its `/readyz` answers 200."""
    argv = gunicorn_argv(
        python, app, bind_of(url), workers, threads,
        "--graceful-timeout", "5", "--timeout", "60", "--name", f"kit-{name}",
    )  # fmt: skip
    return ProcessSpec(
        name=name,
        bind=bind_of(url),
        argv=argv,
        env=env,
        cwd=str(cwd),
        ready_url=url.rstrip("/") + "/readyz",
        ready_timeout_s=60.0,
        kind="app",
    )


def database_env(name: str, url: str) -> dict[str, str]:
    """The variable each app factory reads its database URL from (`CATALOG_DATABASE_URL`)."""
    return {f"{name.upper()}_DATABASE_URL": url}


def manifest_file(m: Manifest) -> str:
    return str((m.path or m.root / "kit.toml").resolve())


def kit_command(*args: str, python: str = sys.executable) -> tuple[str, ...]:
    """`python -m kit.cli args...` (the `kit` script may not be on PATH); the manifest is
    passed as $KIT_MANIFEST, which every kit command reads."""
    return (python, "-m", "kit.cli", *args)


def build_specs(m: Manifest, python: str = sys.executable) -> list[ProcessSpec]:
    """Every process of the manifest, in start order."""
    cwd = m.root
    if not m.monolith.app:
        raise ValueError(
            "monolith.app must name the app factory to run it (e.g. 'pkg.app:create_app()')"
        )
    specs = [
        gunicorn_spec(
            "monolith", m.monolith.app, m.monolith.url, m.monolith.workers,
            database_env("monolith", m.monolith.database_url), cwd, python, m.monolith.threads,
        )
    ]  # fmt: skip
    for service in m.services.values():
        if not service.app:
            raise ValueError(f"services.{service.name}.app must name the app factory to run it")
        specs.append(
            gunicorn_spec(
                service.name, service.app, service.url, service.workers,
                database_env(service.name, service.database_url), cwd, python, service.threads,
            )
        )  # fmt: skip
    admin = m.proxy.admin
    specs.append(
        ProcessSpec(
            name="proxy",
            argv=kit_command("worker", "proxy", python=python),
            env={"KIT_MANIFEST": manifest_file(m)},
            cwd=str(cwd),
            ready_url=f"http://{admin.host}:{admin.port}/healthz",
            ready_timeout_s=30.0,
            kind="proxy",
        )
    )
    rundir = run_dir(m)
    specs.append(
        ProcessSpec(
            name="watchdog",
            argv=(
                python,
                "-m",
                "kit.runtime.watchdog",
                "--manifest",
                str((m.path or m.root / "kit.toml").resolve()),
                "--run-dir",
                str(rundir.run_dir),
                "--log-dir",
                str(rundir.log_dir),
            ),  # fmt: skip
            env={"KIT_MANIFEST": manifest_file(m)},
            cwd=str(cwd),
            kind="watchdog",
        )
    )
    return specs


def proxy_url(m: Manifest) -> str:
    listen = m.proxy.listen
    return f"http://{listen.host}:{listen.port}"


def admin_url(m: Manifest) -> str:
    admin = m.proxy.admin
    return f"http://{admin.host}:{admin.port}"
