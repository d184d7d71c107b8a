"""What hostile testing found, each against a real `kit proxy run` process (issue 17).

Raw sockets for framing; the proxy's RSS read from /proc; slow senders against a short
configured header timeout (1 s); an application error shape set by `error_template`.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from proxy_helpers import TOKEN, Upstream

from tests.fixtures.process import start_proxy_cli

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-value-never-logged"
TEMPLATE = '{"problem": {"code": "{code}", "detail": "{message}"}, "status": "{status}"}'
PER_CLIENT = 12


@dataclass
class RunningProxy:
    proc: subprocess.Popen[str]
    port: int
    admin_port: int
    log: Path

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def connect(self, port: int | None = None, source: str = "127.0.0.1") -> socket.socket:
        sock = socket.socket()
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port or self.port))
        return sock


@pytest.fixture(scope="module")
def proxy(
    upstreams: dict[str, Upstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningProxy]:
    tmp = tmp_path_factory.mktemp("hostile")
    config = tmp / "proxy.toml"
    config.write_text(
        f"""
listen_port = 0
admin_port = 0
admin_token = "{TOKEN}"
store_url = "sqlite:///{tmp / "routes.db"}"
served_by_header = true
error_template = '{TEMPLATE}'

[timeouts]
connect = 1.0
total = 5.0
header = 1.0

[limits]
max_connections = 400
max_connections_per_client = {PER_CLIENT}

[upstreams]
monolith = "{upstreams["monolith"].url}"
catalog = "{upstreams["catalog"].url}"

[shadow]
jsonl_path = "{tmp / "shadow.jsonl"}"
"""
    )
    log = tmp / "proxy.err"
    with open(log, "wb") as err:
        proc = start_proxy_cli(config, stderr=err)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "proxy did not start"
        info = json.loads(proc.stdout.readline())
        yield RunningProxy(
            proc,
            int(info["proxy"].rsplit(":", 1)[1]),
            int(info["admin"].rsplit(":", 1)[1]),
            log,
        )
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def exchange(sock: socket.socket, data: bytes, answers: int = 1, wait: float = 5) -> bytes:
    """Send `data`, read until `answers` complete responses arrived (or the peer closed)."""
    sock.sendall(data)
    got = b""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _complete(got) >= answers:
            break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        got += chunk
    return got


def _complete(data: bytes) -> int:
    count, at = 0, 0
    while True:
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            return count
        head = data[at:end].lower()
        length = 0
        for line in head.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if head.startswith(b"http/1.1 1"):  # an interim answer
            at = end + 4
            continue
        if len(data) < end + 4 + length:
            return count
        count += 1
        at = end + 4 + length


def status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body) if body else {}


# -- 1, 8: no header values in the log; one line per refusal; rate-limited ---------------------
def test_refused_header_lines_are_logged_by_name_only_never_their_values(
    proxy: RunningProxy,
) -> None:
    bad = [
        f"GET / HTTP/1.1\r\nHost: x\r\nCookie: sid={SECRET}\x00\r\n\r\n",
        f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\x01\r\n\r\n",
        f"GET / HTTP/1.1\r\nHost: x\r\nX-Long: {SECRET}{'a' * 40000}\r\n\r\n",
    ]
    for port in (proxy.port, proxy.admin_port):
        for request in bad:
            with proxy.connect(port) as sock:
                raw = exchange(sock, request.encode("latin-1"))
            assert status_and_body(raw)[0] in (400, 431), raw[:80]
            assert SECRET.encode() not in raw
    with proxy.connect(proxy.admin_port) as sock:
        raw = exchange(
            sock,
            f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\x00\r\n\r\n".encode(),
        )
    assert status_and_body(raw)[0] == 400 and TOKEN.encode() not in raw
    text = proxy.log.read_text(errors="replace")
    assert SECRET not in text and TOKEN not in text
    assert "Traceback" not in text
    assert "refused request from 127.0.0.1: 400" in text


def test_a_flood_of_malformed_requests_logs_a_few_lines_a_second(proxy: RunningProxy) -> None:
    before = len(proxy.log.read_text(errors="replace").splitlines())
    started = time.monotonic()
    for _ in range(60):
        with proxy.connect() as sock:
            raw = exchange(sock, b"GET /x HTTP/2.0\r\nHost: x\r\n\r\n")
            assert status_and_body(raw)[0] == 400
    seconds = time.monotonic() - started
    lines = proxy.log.read_text(errors="replace").splitlines()[before:]
    assert len(lines) <= 5 * (int(seconds) + 2)


def test_process_logs_are_written_owner_only(tmp_path: Path) -> None:
    from kit.runtime.procs import ProcessSpec, RunDir, start_detached, stop_record

    rundir = RunDir(tmp_path / "run", tmp_path / "log")
    (tmp_path / "run").mkdir()
    old = tmp_path / "log" / "quiet.log"
    old.parent.mkdir()
    old.write_text("from an older kit\n")
    old.chmod(0o644)
    record = start_detached(ProcessSpec(name="quiet", argv=("sleep", "5")), rundir)
    try:
        assert oct(Path(record.log_path).stat().st_mode & 0o777) == "0o600"
    finally:
        stop_record(record, timeout_s=5)


# -- 2: back-pressure ------------------------------------------------------------------------
def test_a_client_that_never_reads_costs_bounded_memory_and_upstream_work(
    proxy: RunningProxy, upstreams: dict[str, Upstream]
) -> None:
    monolith = upstreams["monolith"]
    blobs_before = monolith.seen().get("blobs", 0)
    rss_before = proxy.rss_kb()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", proxy.port))
    sock.setblocking(False)
    request = b"GET /blob?n=50000 HTTP/1.1\r\nHost: x\r\n\r\n"
    sent = 0
    deadline = time.monotonic() + 4
    try:
        while time.monotonic() < deadline and sent < 3000:
            try:
                sock.send(request)
                sent += 1
            except BlockingIOError:
                time.sleep(0.02)
        time.sleep(1.0)
        settled = monolith.seen().get("blobs", 0) - blobs_before
        time.sleep(1.5)
        fetched = monolith.seen().get("blobs", 0) - blobs_before
        rss_after = proxy.rss_kb()
    finally:
        sock.close()
    # Without back-pressure the proxy kept fetching answers (50 KB each) for it and holding
    # them (hostile testing: 55 MB in 90 s, RSS 88 -> 306 MB); now it stops once the socket
    # buffers are full: no more upstream work, a few MB at most.
    assert fetched - settled <= 2 and fetched < 200, (sent, settled, fetched)
    assert rss_after - rss_before < 10 * 1024, (rss_before, rss_after)
    # The upstream connections it held paused serve the next client at once.
    with proxy.connect() as other:
        assert exchange(other, b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n", wait=2).startswith(
            b"HTTP/1.1 200"
        )


# -- 3: header-read timeout on every path; connection caps -----------------------------------
@pytest.mark.parametrize(
    "prefix",
    [
        b"",  # the fast path reads the head
        b"HEAD /warm HTTP/1.1\r\nHost: x\r\n\r\n",  # after a HEAD: the aiohttp path reads it
        # a head bigger than the fast path reads (handed off while incomplete)
        b"GET /big HTTP/1.1\r\nHost: x"
        + b"".join(b"\r\nX-Pad-%d: %s" % (i, b"p" * 900) for i in range(28))
        + b"\r\n",
    ],
    ids=["fast-path", "after-head", "big-head"],
)
def test_a_slow_sender_gets_408_and_is_closed(proxy: RunningProxy, prefix: bytes) -> None:
    with proxy.connect() as sock:
        if prefix.startswith(b"HEAD"):
            assert exchange(sock, prefix).startswith(b"HTTP/1.1 200")
            prefix = b""
        sock.sendall(prefix or b"G")
        started = time.monotonic()
        got = b""
        for byte in b"ET /slow HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            ready, _, _ = select.select([sock], [], [], 0.2)
            if ready:
                got = sock.recv(65536)
                break
        while not got and time.monotonic() - started < 5:
            got = sock.recv(65536)
        assert got.startswith(b"HTTP/1.1 408"), got[:60]
        assert time.monotonic() - started < 4
        status, body = status_and_body(got)
        assert body == {
            "problem": {
                "code": "request_timeout",
                "detail": "the request head did not arrive in time",
            },
            "status": 408,
        }


def test_connections_over_the_per_client_cap_are_refused_with_503(proxy: RunningProxy) -> None:
    held = [proxy.connect(source="127.0.0.3") for _ in range(PER_CLIENT)]
    try:
        time.sleep(0.1)
        with proxy.connect(source="127.0.0.3") as extra:
            raw = extra.recv(65536)
        status, body = status_and_body(raw)
        assert status == 503 and body["problem"]["code"] == "too_many_connections"  # type: ignore[index]
        with proxy.connect(source="127.0.0.4") as other:  # another address is not refused
            assert exchange(other, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
                b"HTTP/1.1 200"
            )
    finally:
        for sock in held:
            sock.close()


# -- 4: a request after an upgrade is answered ---------------------------------------------
def test_a_request_pipelined_after_an_h2c_upgrade_is_answered(proxy: RunningProxy) -> None:
    with proxy.connect() as sock:
        raw = exchange(
            sock,
            b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n",
            answers=2,
        )
    assert raw.count(b"HTTP/1.1 200") == 2
    assert b'"path": "/first"' in raw and b'"path": "/second"' in raw


# -- 5, 6: credentials, login throttle, Host allow-list on the admin server ----------------------
def _admin(proxy: RunningProxy, source: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{proxy.admin_port}",
        transport=httpx.HTTPTransport(local_address=source),
        trust_env=False,
        timeout=5,
    )


def test_any_bytes_in_credentials_give_401_or_403_never_500(proxy: RunningProxy) -> None:
    with _admin(proxy, "127.0.0.6") as signed:
        assert signed.post("/dashboard/login", data={"token": TOKEN}).status_code in (302, 303)
        cookie = signed.cookies["strangler_dashboard"].encode()
    tries = [
        b"GET /admin/routes HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer \xc3\xa9\xff\r\n\r\n",
        b"GET /dashboard/ HTTP/1.1\r\nHost: %s\r\nCookie: strangler_dashboard=\xc3\xa9.\xff\r\n\r\n",
        b"POST /dashboard/reset HTTP/1.1\r\nHost: %s\r\nCookie: strangler_dashboard="
        + cookie
        + b"\r\nX-CSRF-Token: \xff\xfe\r\nContent-Length: 0\r\n\r\n",
    ]
    host = b"127.0.0.1:%d" % proxy.admin_port
    for raw_request in tries:
        with proxy.connect(proxy.admin_port) as sock:
            raw = exchange(sock, raw_request.replace(b"%s", host))
        status = int(raw.split(b" ")[1])
        assert status in (302, 303, 401, 403), raw[:200]


def test_wrong_tokens_from_one_client_do_not_lock_out_another(proxy: RunningProxy) -> None:
    with _admin(proxy, "127.0.0.5") as attacker:
        for _ in range(12):
            attacker.post("/dashboard/login", data={"token": "wrong"})
        assert attacker.post("/dashboard/login", data={"token": "wrong"}).status_code == 429
    with _admin(proxy) as operator:
        signed_in = operator.post("/dashboard/login", data={"token": TOKEN})
        assert signed_in.status_code in (302, 303)


def test_the_admin_server_answers_only_to_its_own_address(proxy: RunningProxy) -> None:
    with _admin(proxy) as client:
        assert client.get("/metrics").status_code == 200
        rebound = client.get("/metrics", headers={"Host": f"evil.example:{proxy.admin_port}"})
        assert rebound.status_code == 421
        assert rebound.json()["error"]["code"] == "misdirected_request"
        assert "strangler_proxy" not in rebound.text


# -- 7, 9, 10: request lines, forwarded headers, error shape, header count, 100 Continue ------------
@pytest.mark.parametrize(
    "line",
    [b"GET /x", b"GET /x HTTP/2.0", b"GET /x HTTP/0.9", b"GET  /x HTTP/1.1", b"GET /x  HTTP/1.1"],
)
@pytest.mark.parametrize("after_head", [False, True], ids=["first", "after-head"])
def test_odd_request_lines_get_400_as_from_gunicorn(
    proxy: RunningProxy, line: bytes, after_head: bool
) -> None:
    with proxy.connect() as sock:
        if after_head:
            assert exchange(sock, b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
                b"HTTP/1.1 200"
            )
        raw = exchange(sock, line + b"\r\nHost: x\r\n\r\n")
    status, body = status_and_body(raw)  # (aiohttp answers a line it could not read in 1.0)
    assert status == 400, raw[:80]
    assert body["problem"]["code"] == "bad_request"  # type: ignore[index]


def test_a_clients_own_forwarded_host_never_reaches_the_upstream(proxy: RunningProxy) -> None:
    with proxy.connect() as sock:
        raw = exchange(sock, b"GET /fwd HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200") or raw.startswith(b"HTTP/1.0 200"), raw[:80]
    echoed = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert "evil.example" not in json.dumps(echoed["headers"])


def test_the_proxys_own_errors_use_the_configured_shape_and_its_431(proxy: RunningProxy) -> None:
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(101))
    for prefix in (b"", b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n"):
        with proxy.connect() as sock:
            if prefix:
                exchange(sock, prefix)
            raw = exchange(sock, b"GET /many HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        status, body = status_and_body(raw)
        assert status == 431
        assert body == {
            "problem": {"code": "headers_too_large", "detail": "more than 100 request headers"},
            "status": 431,
        }


def test_a_client_waiting_for_100_continue_gets_it(proxy: RunningProxy) -> None:
    with proxy.connect() as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        raw = exchange(sock, b"hello")
    assert b"HTTP/1.1 200" in interim + raw
    assert b'"body": "hello"' in interim + raw
