"""The notification HTTP sender against small raw asyncio servers (real sockets)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

import pytest

from kizuna.broker.subscriptions.sender import HttpSender

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def run(handler: Handler, client: Callable[[str], Awaitable[object]]) -> object:
    async def main() -> object:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await client(f"http://127.0.0.1:{port}")

    return asyncio.run(main())


def test_keeps_connections_alive_and_sends_body_and_headers() -> None:
    connections: list[int] = []
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                seen.append(await read_request(reader))
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        except asyncio.IncompleteReadError:
            writer.close()

    async def client(base: str) -> list[int]:
        sender = HttpSender(timeout=5, per_origin=4)
        statuses = [
            await sender.post(f"{base}/n/{i}?x=1", b'{"n": %d}' % i, {"Link": "<a>"})
            for i in range(3)
        ]
        sender.close()
        return statuses

    assert run(handler, client) == [204, 204, 204]
    assert len(connections) == 1
    assert [body for _, body in seen] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    head = seen[2][0].decode()
    assert head.startswith("POST /n/2?x=1 HTTP/1.1\r\n")
    assert "\r\nLink: <a>\r\n" in head
    assert "\r\nHost: 127.0.0.1:" in head


def test_reads_chunked_interim_and_close_delimited_responses() -> None:
    replies = [
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.0 202 Accepted\r\n\r\nbody until the end",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(replies.pop(0))
        await writer.drain()
        writer.close()

    async def client(base: str) -> list[int]:
        sender = HttpSender(timeout=5, per_origin=4)
        return [await sender.post(base, b"{}", {}), await sender.post(base, b"{}", {})]

    assert run(handler, client) == [201, 202]


def test_resends_once_when_an_idle_connection_was_closed_by_the_server() -> None:
    served: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers as keep-alive, then drops the connection while it is idle.
        _, body = await read_request(reader)
        served.append(body)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.transport.abort()

    noted: list[int] = []

    async def client(base: str) -> list[int]:
        sender = HttpSender(timeout=5, per_origin=4)
        first = await sender.post(base, b"1", {}, lambda: noted.append(1))
        await asyncio.sleep(0)  # the close may or may not have been seen yet; both work
        second = await sender.post(base, b"2", {}, lambda: noted.append(2))
        return [first, second]

    assert run(handler, client) == [200, 200]
    assert served == [b"1", b"2"]
    assert noted == [1, 2]  # once per notification, even when it was written twice


def test_a_server_that_never_answers_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async def client(base: str) -> str:
        sender = HttpSender(timeout=0.2, per_origin=4)
        try:
            await sender.post(base, b"{}", {})
        except TimeoutError:
            return "timed out"
        return "answered"

    assert run(handler, client) == "timed out"


def test_credentials_in_the_url_become_basic_auth() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        heads.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        writer.close()

    async def client(base: str) -> int:
        return await HttpSender(5, 4).post(base.replace("//", "//al%40ce:s3cret@"), b"{}", {})

    assert run(handler, client) == 200
    token = base64.b64encode(b"al@ce:s3cret").decode()
    assert f"\r\nAuthorization: Basic {token}\r\n".encode() in heads[0]
    assert b"@" not in heads[0].split(b"\r\nHost: ")[1].split(b"\r\n")[0]


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("http://127.0.0.1:9/n", {"X-Evil": "a\r\nInjected: yes"}),
        ("http://127.0.0.1:9/n", {"Bad Name": "v"}),
        ("ftp://127.0.0.1/n", {}),
    ],
)
def test_what_cannot_be_sent_is_refused_before_connecting(
    url: str, headers: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        asyncio.run(HttpSender(5, 4).post(url, b"{}", headers))
