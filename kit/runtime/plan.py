"""What `kit up` runs, derived from the manifest: one `ProcessSpec` per process.

- the monolith and every service as the team runs it (docs/manifest.md, "Running the apps"):
  its own interpreter, folder (first on PYTHONPATH), environment and database variable; its
  `command`, by default gunicorn (gthread workers with keep-alive); ready when its `ready`
  check passes (HTTP path + status, or a TCP connect). An `external` app is only checked;
- the proxy with its admin API (`kit worker proxy`: the manifest's upstreams and routes,
  playbook guards, the parity sink), health-checked on the admin `/healthz`;
- the CDC watchdog, which starts the CDC workers the playbook state asks for.

The kit's own processes run in the manifest's folder, so relative paths mean the same to all.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kit.appenv import app_variables
from kit.manifest import AppSpec, Manifest
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


def placeholders(spec: AppSpec, python: str) -> dict[str, str]:
    """Values of a `command`/`seed` argv's `{placeholders}` for one app."""
    parts = urlsplit(spec.url)
    return {
        "python": python,
        "app": spec.app or "",
        "host": parts.hostname or "",
        "port": str(parts.port or ""),
        "bind": bind_of(spec.url),
        "workers": str(spec.workers),
        "threads": str(spec.threads),
        "database_url": spec.database_url,
    }


def app_argv(spec: AppSpec, name: str, python: str) -> tuple[str, ...]:
    """The app's `command` with its placeholders filled in, else gunicorn on its `app`."""
    if spec.command is not None:
        values = placeholders(spec, python)
        return tuple(arg.format(**values) for arg in spec.command)
    if not spec.app:
        raise ValueError(f"{name} needs `app` (a WSGI factory) or `command` to run it")
    return gunicorn_argv(
        python, spec.app, bind_of(spec.url), spec.workers, spec.threads,
        "--graceful-timeout", "5", "--timeout", "60", "--name", f"kit-{name}",
    )  # fmt: skip


def app_spec(spec: AppSpec, python: str = sys.executable) -> ProcessSpec:
    """One app as the manifest says the team runs it; `python` when it names none."""
    rt = spec.runtime
    name = rt.name
    ready = {
        "ready_url": spec.ready_target,
        "ready_status": spec.ready.status if spec.ready.path is not None else None,
        "ready_timeout_s": spec.ready.timeout_s,
        "kind": "app",
    }
    if spec.external:
        return ProcessSpec(name=name, argv=(), external=True, **ready)
    return ProcessSpec(
        name=name,
        bind=bind_of(spec.url),
        argv=app_argv(spec, name, spec.python or python),
        env=app_variables(rt),
        cwd=str(rt.cwd),
        **ready,
    )


def manifest_file(m: Manifest) -> str:
    return str((m.path or m.root / "kit.toml").resolve())


def kit_command(*args: str, python: str = sys.executable) -> tuple[str, ...]:
    """`python -m kit.cli args...` (the `kit` script may not be on PATH); the manifest is
    passed as $KIT_MANIFEST, which every kit command reads."""
    return (python, "-m", "kit.cli", *args)


def build_specs(m: Manifest, python: str = sys.executable) -> list[ProcessSpec]:
    """Every process of the manifest, in start order."""
    cwd = m.root
    specs = [app_spec(a, python) for a in (m.monolith, *m.services.values())]
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


def read_admin_stats(m: Manifest, timeout: float = 5.0) -> dict[str, Any]:
    """The running proxy's `/admin/stats` (per-route series, counters, canary splits).

    Raises OSError (no token file), httpx.HTTPError (no proxy, refused) or ValueError.
    """
    import httpx

    token = Path(m.proxy.token_file).read_text().strip()
    response = httpx.get(
        f"{admin_url(m)}/admin/stats",
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
        trust_env=False,
    )
    response.raise_for_status()
    data = response.json()
    if not isinstance(data, dict):
        raise ValueError("/admin/stats did not answer a JSON object")
    return data
