"""Lean hot path: an asyncio.Protocol HTTP/1.1 front end and a keep-alive upstream pool.

Why: aiohttp's general-purpose server and client machinery cost ~150 us per proxied request;
the common case (a small, well-formed HTTP/1.1 request with a Content-Length body or none,
routed to a plain-http upstream) needs a fraction of that.

Safety by construction: the fast path only *accepts* requests it has validated strictly
(`head`); anything else - and every mode or option the fast path does not implement (shadow
copies, HEAD, HTTP/1.0, https upstreams, bodies over `SMALL_BODY`) - is *handed off*: the
connection, with every byte received so far, goes to the guarded aiohttp handler (`fullpath`),
which gives the shared request-head verdicts (`strangler_proxy.headcheck`) and answers through
`ProxyCore.handle`. Both paths route with `ProxyCore.decide` (`strangler_proxy.policy`).

Modules: `head` (request-head parser), `exchange` (one upstream request/response),
`upstream` (upstream connection and pool), `protocol` (client connection), `server` (routing
and the callback flow), `relay` (the coroutine flow), `sweeper` (timeouts), `admission`
(connection caps), `fullpath` (the aiohttp side), `listener` (the port).
"""

from strangler_proxy.fastpath.listener import ProxyListener, make_listening_socket

__all__ = ["ProxyListener", "make_listening_socket"]
