"""A tiny controllable upstream for proxy tests, run as a real process.

    python upstream_app.py NAME [PORT]

Binds 127.0.0.1:0 and prints the port on its first stdout line. Every ordinary request is
echoed back as JSON (method, raw path, headers, body); `POST /__control` changes behaviour
for later requests: `status` (answer with this status), `delay` (seconds), `hold` (wait until
released by `{"hold": false}`), `close` (drop the connection without answering), `ready`
(what /readyz says). `GET /__seen` counts the ordinary requests received so far (and
`blobs`: answers of `GET /blob?n=<bytes>`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys

from aiohttp import web

DEFAULT_STATE = {"status": 200, "delay": 0.0, "hold": False, "close": False, "ready": True}


def build_app(name: str) -> web.Application:
    state = dict(DEFAULT_STATE)
    seen = {"count": 0, "held": 0, "answered": 0}
    release = asyncio.Event()
    release.set()

    async def control(request: web.Request) -> web.Response:
        data = await request.json()
        if data.get("reset"):
            state.clear()
            state.update(DEFAULT_STATE)
            seen.update(count=0, held=0, answered=0)
            release.set()
        for key, value in data.items():
            if key in state:
                state[key] = value
        if "hold" in data:
            if data["hold"]:
                release.clear()
            else:
                release.set()
        return web.json_response(state)

    async def seen_view(_request: web.Request) -> web.Response:
        return web.json_response(seen)

    async def readyz(_request: web.Request) -> web.Response:
        if state["ready"]:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "unavailable"}, status=503)

    async def stream(request: web.Request) -> web.StreamResponse:
        total = int(request.query.get("n", "1000000"))
        resp = web.StreamResponse(headers={"X-Upstream": name})
        resp.content_type = "application/octet-stream"
        await resp.prepare(request)
        sent = 0
        while sent < total:
            chunk = min(65536, total - sent)
            await resp.write(b"x" * chunk)
            sent += chunk
        await resp.write_eof()
        return resp

    async def blob(request: web.Request) -> web.Response:
        seen["blobs"] = seen.get("blobs", 0) + 1
        return web.Response(body=b"b" * int(request.query.get("n", "50000")))

    async def echo(request: web.Request) -> web.StreamResponse:
        seen["count"] += 1
        body = await request.read()
        if state["hold"]:
            seen["held"] += 1
            await release.wait()
        if state["delay"]:
            await asyncio.sleep(float(state["delay"]))
        if state["close"]:
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(0.05)
            raise ConnectionResetError("closed on purpose")
        try:
            text = body.decode()
            body_field: dict[str, object] = {"body": text}
        except UnicodeDecodeError:
            body_field = {"body_b64": base64.b64encode(body).decode()}
        payload = {
            "upstream": name,
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_len": len(body),
            **body_field,
        }
        seen["answered"] += 1
        resp = web.Response(
            status=int(state["status"]),
            body=json.dumps(payload).encode(),
            content_type="application/json",
            headers={
                "X-Upstream": name,
                "Set-Cookie": f"upstream={name}; Path=/",
                "Connection": "keep-alive, X-Secret-Hop",
                "X-Secret-Hop": "must-not-pass",
            },
        )
        return resp

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/__control", control)
    app.router.add_get("/__seen", seen_view)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/stream", stream)
    app.router.add_get("/blob", blob)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def main(name: str, port: int = 0) -> None:
    runner = web.AppRunner(build_app(name), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1]
    print(port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0))
    except KeyboardInterrupt:
        pass
