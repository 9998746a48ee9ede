"""A loopback HTTP proxy in front of a real `llama-server` that fails on demand, as a server in
trouble does: it stays silent, answers 5xx, or cuts a streamed reply after some events. It runs
on the test's event loop and notes when each request arrived, so tests can check the engine's
backoff between health checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Literal

Mode = Literal["pass", "silent", "5xx"]


@dataclass(frozen=True)
class Seen:
    """One request the proxy received: when (time.monotonic()), its method, path and body."""

    at: float
    method: str
    path: str
    body: bytes


class FaultyProxy:
    """`async with FaultyProxy(upstream_url) as proxy:` then point the engine at `proxy.url`.

    `mode` applies to every request from now on. `cuts` holds event counts: each streamed reply
    takes the first, if any, and is cut after that many events (proxies may share one list, so
    that only the first reply through any of them is cut). Each request gets a connection of its
    own (`Connection: close`), so every one is seen.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self._upstream = (host, int(port))
        self.mode: Mode = "pass"
        self.cuts: list[int] = []
        self.seen: list[Seen] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None, "the proxy is not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def seen_since(self, moment: float, path: str) -> list[float]:
        """When requests for `path` arrived after `moment`."""
        return [s.at for s in self.seen if s.at > moment and s.path == path]

    async def __aenter__(self) -> FaultyProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._closing.set()  # silent requests end; forwarded ones end with their upstream
        self._server.close()
        await asyncio.wait_for(asyncio.gather(*self._handlers, return_exceptions=True), 30)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._one_request(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the engine hung up (it timed out, or stopped a reply)
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.seen.append(Seen(time.monotonic(), method, path, body))
        if self.mode == "silent":
            await self._closing.wait()  # the engine gives up and hangs up long before
            return
        if self.mode == "5xx":
            message = b'{"error": {"code": 503, "message": "Loading model"}}'
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(message), message))
            await writer.drain()
            return
        await self._forward(method, path, header_lines, body, writer)

    async def _forward(
        self, method: str, path: str, header_lines: list[str], body: bytes,
        writer: asyncio.StreamWriter,
    ) -> None:
        kept = [line for line in header_lines
                if line and line.split(":", 1)[0].strip().lower() != "connection"]
        head = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""])
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        try:
            up_writer.write(head.encode("latin-1") + body)
            await up_writer.drain()
            cut_after: int | None = None
            events = 0
            while chunk := await up_reader.read(65536):
                if b"data:" in chunk and events == 0 and self.cuts:
                    cut_after = self.cuts.pop(0)
                if cut_after is not None and b"data:" in chunk:
                    events += chunk.count(b"data:")
                    if events >= cut_after:
                        # Whole events only, then the connection drops: a server dying mid-reply.
                        writer.write(chunk[: chunk.rfind(b"\n\n") + 2] if b"\n\n" in chunk else b"")
                        await writer.drain()
                        writer.transport.abort()
                        return
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.close()
            with contextlib.suppress(ConnectionError):
                await up_writer.wait_closed()
