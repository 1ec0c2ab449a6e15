"""The status server: a small, read-only HTTP/1.1 server on the standard library's asyncio
streams, for the line technician's page and for Prometheus.

    GET /              the status page (one static file, inline CSS and script)
    GET /status.json   what the page shows (gateway.status), polled by it every second
    GET /metrics       Prometheus text format
    GET /healthz       200 `ok` while the pipelines make progress, else 503

HEAD works on each; any other method is 405, any other path 404. Nothing served changes state:
there is no route that writes, and the server only reads what the parts expose.

A client never stalls the gateway: each connection is a task of its own, with a deadline for
its request and for writing the answer, and a cap on the request head (`MAX_HEAD_BYTES`,
`MAX_HEADERS`: 431 beyond) and on connections at once (`MAX_CLIENTS`: closed at once beyond).
One request per connection (`Connection: close`). Bound to loopback, it also answers only
requests whose Host is a loopback name (421 otherwise), so that a web page elsewhere cannot
read it through DNS rebinding.

A port that cannot be bound (in use, an address the host lacks) is logged as
`status_server_failed`, naming the field, and retried with backoff: the gateway goes on
recording without its page, since a diagnostic page is no reason to stop traceability.
"""

from __future__ import annotations

import asyncio
import errno
import json
from importlib import resources
from typing import Any

from gateway.config.models import StatusConfig
from gateway.log import get_logger
from gateway.metrics import CONTENT_TYPE as METRICS_TYPE
from gateway.status import GatewayStatus
from gateway.supervise import Backoff

log = get_logger(__name__)

MAX_HEAD_BYTES = 8192  # request line and headers
MAX_HEADERS = 64
MAX_CLIENTS = 32
READ_TIMEOUT_S = 5.0  # to send the request head
WRITE_TIMEOUT_S = 10.0  # to take the answer
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
ROUTES = ("/", "/status.json", "/metrics", "/healthz")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})

# The page may run its inline script and style, and fetch from this server only.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def page() -> bytes:
    return resources.files("gateway").joinpath("status_page.html").read_bytes()


class StatusServer:
    """Serves `status` on `config.listen_host:config.port` until cancelled."""

    def __init__(self, config: StatusConfig, status: GatewayStatus) -> None:
        self.config = config
        self.status = status
        self.page = page()
        self.port: int | None = None  # the bound port, once listening
        self.address: tuple[str, int] | None = None  # (address, port) of the first socket
        self.listening = asyncio.Event()
        self._clients: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        cfg = self.config
        backoff = Backoff(RETRY_INITIAL_S, RETRY_MAX_S)
        failures = 0
        while True:
            try:
                server = await asyncio.start_server(
                    self._handle, cfg.listen_host, cfg.port, limit=MAX_HEAD_BYTES
                )
            except OSError as exc:
                failures += 1
                delay = backoff.next()
                fields = {
                    "field": "status.listen_host"
                    if exc.errno == errno.EADDRNOTAVAIL
                    else "status.port",
                    "host": cfg.listen_host,
                    "port": cfg.port,
                    "error": exc.strerror or str(exc),
                    "retry_in_s": round(delay, 1),
                }
                if failures == 1:
                    log.error(
                        "status_server_failed",
                        **fields,
                        note="the gateway records on without its status page; retrying",
                    )
                else:
                    log.debug("status_server_failed", **fields)
                await asyncio.sleep(delay)
                continue
            break
        try:
            self.address = server.sockets[0].getsockname()[:2]
            self.port = self.address[1]
            log.info(
                "status_server_started",
                host=cfg.listen_host,
                port=self.port,
                url=f"http://{_url_host(cfg.listen_host)}:{self.port}/",
            )
            if not cfg.loopback:
                log.warning(
                    "status_page_exposed",
                    host=cfg.listen_host,
                    port=self.port,
                    note="status.listen_host is not loopback: the page and metrics are open "
                    "to that network, read-only and without authentication",
                )
            self.listening.set()
            await asyncio.Event().wait()  # serves until cancelled
        finally:
            server.close()
            for t in list(self._clients):
                t.cancel()
            if self._clients:
                await asyncio.wait(self._clients)
            await server.wait_closed()

    # --- one connection -------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            if len(self._clients) > MAX_CLIENTS:
                return
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                await self._send(writer, 431, b"request head too large\n", head_only=False)
                return
            except (asyncio.IncompleteReadError, TimeoutError):
                return  # closed or too slow before a whole request: nothing to answer
            try:
                method, code, headers, body = await self._answer(head)
            except Exception:  # a bug in a read-only page must not touch recording: log it
                log.exception("status_request_failed")
                method, code, headers, body = "", 500, {}, b"internal error (logged)\n"
            await self._send(writer, code, body, head_only=method == "HEAD", extra=headers)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or does not read: drop it
        finally:
            self._clients.discard(task)
            writer.transport.abort()  # sent and closed already, or abandoned: no lingering

    async def _answer(self, head: bytes) -> tuple[str, int, dict[str, str], bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
            return "", 400, {}, b"bad request line\n"
        method, target, version = parts
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            return method, 505, {}, b"HTTP/1.0 or HTTP/1.1 only\n"
        headers: dict[str, str] = {}
        fields = [h for h in lines[1:] if h]
        if len(fields) > MAX_HEADERS:
            return method, 431, {}, b"too many header fields\n"
        for h in fields:
            name, sep, value = h.partition(":")
            if not sep or not name or name != name.strip():
                return method, 400, {}, b"bad header field\n"
            headers[name.lower()] = value.strip()
        if self.config.loopback and _host_name(headers.get("host", "")) not in LOOPBACK_HOSTS:
            return method, 421, {}, b"this server answers requests for localhost only\n"
        path = target.split("?", 1)[0]
        if path not in ROUTES:
            return method, 404, {}, b"not found\n"
        if method not in ("GET", "HEAD"):
            return method, 405, {"Allow": "GET, HEAD"}, b"read-only: GET or HEAD\n"
        if path == "/":
            return (
                method,
                200,
                {"Content-Type": "text/html; charset=utf-8", **_PAGE_HEADERS},
                (self.page),
            )
        if path == "/status.json":
            doc = await self.status.document()
            body = json.dumps(doc, separators=(",", ":")).encode()
            return method, 200, {"Content-Type": "application/json"}, body
        if path == "/metrics":
            text = await self.status.metrics()
            return method, 200, {"Content-Type": METRICS_TYPE}, text.encode()
        healthy = self.status.gw.healthy()
        return method, 200 if healthy else 503, {}, b"ok\n" if healthy else b"stuck\n"

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        code: int,
        body: bytes,
        *,
        head_only: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.status.requests[code] = self.status.requests.get(code, 0) + 1
        headers = {
            "Content-Type": "text/plain; charset=utf-8",
            **(extra or {}),
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Connection": "close",
        }
        head = f"HTTP/1.1 {code} {REASONS[code]}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        writer.write(head.encode("latin-1") + b"\r\n" + (b"" if head_only else body))
        writer.close()  # after what is buffered is sent
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.wait_closed()


def _host_name(host: str) -> str:
    """The name of a Host header without its port: `localhost:9780` -> `localhost`,
    `[::1]:9780` -> `[::1]`."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
