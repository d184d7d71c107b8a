"""`kit route` against a running proxy and against the store; `kit proxy run` as a process."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from proxy_helpers import TOKEN, ProxyThread, Upstream

from kit.commands.route import cli as route_cli
from tests.fixtures.process import start_proxy_cli

pytestmark = pytest.mark.integration


def _run(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(route_cli, list(args), env=env, catch_exceptions=False)


def test_route_list_set_history_and_reset_through_the_admin_api(
    shop_proxy: ProxyThread, client: httpx.Client
) -> None:
    env = {"KIT_ADMIN_URL": shop_proxy.admin_url, "KIT_ADMIN_TOKEN": TOKEN}
    listed = _run("list", env=env)
    assert listed.exit_code == 0
    assert "METHOD" in listed.output and "/products/<int:id>" in listed.output
    (row,) = [
        line.split()
        for line in listed.output.splitlines()
        if line.startswith("GET ") and "/products/<int:id>" in line
    ]
    assert row[:4] == ["GET", "/products/<int:id>", "catalog", "monolith"]
    assert "sticky-header=X-Client-Id" in listed.output
    changed = _run(
        "set",
        "GET",
        "/products/<int:id>",
        "extracted",
        "--reason",
        "cut over",
        "--actor",
        "dana",
        env=env,
    )
    assert changed.exit_code == 0, changed.output
    assert "monolith (catalog) -> extracted (catalog)" in changed.output
    assert client.get("/products/1").headers["x-served-by"] == "catalog"
    history = _run("history", "--limit", "1", env=env)
    assert "dana" in history.output and "cut over" in history.output
    assert "extracted" in history.output
    assert _run("reset", env=env).exit_code == 0
    assert client.get("/products/1").headers["x-served-by"] == "monolith"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("GET", "/orders/<int:id>", "extracted"), "no route is declared for GET /orders"),
        (
            ("GET", "/products/<int:id>", "extracted", "--service", "billing"),
            "unknown service 'billing'",
        ),
        (("GET", "/products/<int:id>", "canary:150"), "canary percent must be between 0 and 100"),
        (("BREW", "/products/<int:id>", "shadow"), "unknown HTTP method"),
    ],
)
def test_route_set_rejects_bad_input_with_a_message_and_non_zero_exit(
    shop_proxy: ProxyThread, args: tuple[str, ...], message: str
) -> None:
    for backend in (
        ["--admin-url", shop_proxy.admin_url, "--token", TOKEN],
        ["--store", shop_proxy.runtime.config.store_url],
    ):
        before = _run(*backend, "list", "--json").output
        result = CliRunner().invoke(route_cli, [*backend, "set", *args])
        assert result.exit_code != 0
        assert message in result.output
        assert _run(*backend, "list", "--json").output == before


def test_route_set_through_the_store_is_guarded_by_readiness(
    shop_proxy: ProxyThread, fresh_upstreams: dict[str, Upstream]
) -> None:
    store = ["--store", shop_proxy.runtime.config.store_url]
    fresh_upstreams["catalog"].control(ready=False)
    refused = CliRunner().invoke(route_cli, [*store, "set", "GET", "/products", "canary:10"])
    assert refused.exit_code != 0 and "not ready" in refused.output
    forced = _run(*store, "set", "GET", "/products", "canary:10", "--force")
    assert forced.exit_code == 0


def test_wrong_token_is_a_clear_cli_error(shop_proxy: ProxyThread) -> None:
    result = CliRunner().invoke(
        route_cli, ["--admin-url", shop_proxy.admin_url, "--token", "nope-nope-nope", "list"]
    )
    assert result.exit_code != 0 and "invalid bearer token" in result.output


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_kit_proxy_run_serves_and_drains_in_flight_requests_on_sigterm(
    tmp_path: Path, fresh_upstreams: dict[str, Upstream]
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f"""
listen_port = 0
admin_port = 0
admin_token_file = "{tmp_path / "token"}"
store_url = "sqlite:///{tmp_path / "routes.db"}"
served_by_header = true

[upstreams]
monolith = "{fresh_upstreams["monolith"].url}"
catalog = "{fresh_upstreams["catalog"].url}"

[shadow]
jsonl_path = "{tmp_path / "shadow.jsonl"}"

[[routes]]
methods = ["GET"]
path = "/products/<int:id>"
service = "catalog"
mode = "extracted"
"""
    )
    proc = start_proxy_cli(config, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "proxy did not start"
        info = json.loads(proc.stdout.readline())
        token = Path(info["token_file"]).read_text().strip()
        assert oct(Path(info["token_file"]).stat().st_mode & 0o777) == "0o600"
        with httpx.Client(trust_env=False, timeout=10) as client:
            assert client.get(info["proxy"] + "/products/4").headers["x-served-by"] == "catalog"
            routes = client.get(
                info["admin"] + "/admin/routes", headers={"Authorization": f"Bearer {token}"}
            )
            assert routes.status_code == 200
            fresh_upstreams["monolith"].control(hold=True)
            result: dict[str, int] = {}
            slow = threading.Thread(
                target=lambda: result.setdefault(
                    "status", client.get(info["proxy"] + "/x").status_code
                )
            )
            slow.start()
            while fresh_upstreams["monolith"].seen()["held"] < 1:
                pass
            os.kill(proc.pid, signal.SIGTERM)
            port = int(info["proxy"].rsplit(":", 1)[1])
            while _accepts(port):  # shutdown has begun: no new connections...
                pass
            fresh_upstreams["monolith"].control(hold=False)  # ...yet the held one completes
            slow.join(10)
            assert result.get("status") == 200  # drained, not dropped
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
