"""HTTP/1.1 POSTs of notifications over kept-alive connections, parsed with httptools.

Why not httpx here: profiled at 1,000 notifications/s, one httpx POST cost about 5 ms
of CPU, most of it httpcore's pool polling every pooled socket on each request and on
each release, so the delivery worker fell behind and notifications queued in the outbox
for tens of seconds. A notification is one small POST whose response body is not
needed, so an asyncio protocol with httptools (the C parser uvicorn uses) sends it for a
small fraction of that.

Each origin (scheme, host, port) has a bounded number of connections (callers wait for
a free slot) and a stack of idle ones. A request that fails on a reused connection
before any response arrived (the server closed it while idle) is sent once more on a
new connection; notifications are at-least-once with a stable id, so a repeat is safe.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import Callable
from urllib.parse import SplitResult, unquote, urlsplit

import httptools

_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time."""

    def __init__(self, on_lost: list[_Connection]) -> None:
        self._idle = on_lost  # the origin's idle stack, left when the peer closes
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None
        self._status = 0
        self.closed = False
        self.keep_alive = True
        self.answered = False  # any byte of the current response arrived

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        with contextlib.suppress(ValueError):
            self._idle.remove(self)
        if self._status >= 200:
            self._settle(self._status)  # a body delimited by the connection's end
        else:
            self._fail(ConnectionError("connection closed before a response"))

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_message_complete(self) -> None:
        if self._status < 200:
            self._status = 0  # an interim (1xx) response; the real one follows
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._settle(self._status)

    # use
    def send(self, data: bytes) -> asyncio.Future[int]:
        """Write a request; the future gets the response's status code."""
        assert self._transport is not None
        self._status = 0
        self.answered = False
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return self._waiter

    @property
    def usable(self) -> bool:
        """Not closed, nor closing (the peer's EOF seen, connection_lost not yet run)."""
        return not self.closed and not (self._transport is None or self._transport.is_closing())

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def _settle(self, status: int) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(status)

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)


class _Origin:
    def __init__(self, scheme: str, host: str, port: int, slots: int) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.slots = asyncio.Semaphore(slots)
        self.idle: list[_Connection] = []


class HttpSender:
    def __init__(self, timeout: float, per_origin: int) -> None:
        self.timeout = timeout
        self.per_origin = per_origin
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        on_sent: Callable[[], None] | None = None,
    ) -> int:
        """POST ``body`` to ``url``; returns the response's status code.

        ``on_sent`` is called once, when the request has been written (before the
        receiver can have read it). Raises OSError (ConnectionError, TimeoutError) when no
        response came, ValueError for a URL or header that cannot be sent.
        """
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        key = (parts.scheme, parts.hostname, port)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(*key, self.per_origin)
        request = _request_bytes(parts, body, headers)
        sent = [on_sent] if on_sent is not None else []
        async with origin.slots:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(origin, request, sent)

    async def _exchange(
        self, origin: _Origin, request: bytes, sent: list[Callable[[], None]]
    ) -> int:
        conn = None
        while origin.idle and conn is None:
            conn = origin.idle.pop()
            if not conn.usable:
                conn = None
        if conn is not None:
            try:
                return await self._on(origin, conn, request, sent)
            except ConnectionError:
                if conn.answered:
                    raise
                # closed by the server while idle: once more on a fresh connection
        return await self._on(origin, await self._connect(origin), request, sent)

    async def _on(
        self, origin: _Origin, conn: _Connection, request: bytes, sent: list[Callable[[], None]]
    ) -> int:
        try:
            response = conn.send(request)
            while sent:
                sent.pop()()
            status = await response
        except BaseException:  # an error or a timeout mid-response: the stream is unusable
            conn.close()
            raise
        if conn.keep_alive and not conn.closed:
            origin.idle.append(conn)
        else:
            conn.close()
        return status

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        _, conn = await loop.create_connection(
            lambda: _Connection(origin.idle),
            origin.host,
            origin.port,
            ssl=tls,
            server_hostname=origin.host if tls else None,
        )
        return conn

    def close(self) -> None:
        for origin in self._origins.values():
            for conn in list(origin.idle):
                conn.close()
            origin.idle.clear()
        self._origins.clear()


def _request_bytes(parts: SplitResult, body: bytes, headers: dict[str, str]) -> bytes:
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = parts.netloc.rpartition("@")[2]
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {host}",
        "User-Agent: kizuna",
        "Accept: */*",
        f"Content-Length: {len(body)}",
    ]
    if parts.username is not None:
        user = unquote(parts.username)
        password = unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        lines.append(f"Authorization: Basic {token}")
    for name, value in headers.items():
        if not name or any(c in name for c in " \t\r\n:") or any(c in value for c in "\r\n"):
            raise ValueError(f"header {name!r} cannot be sent")
        lines.append(f"{name}: {value}")
    if any(c in target for c in " \r\n"):
        raise ValueError(f"request target {target!r} cannot be sent")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
