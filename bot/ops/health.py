"""The bot's HTTP endpoint for its operator: `/healthz`, `/readyz` and `/metrics`.

It runs on a thread of its own (a WSGI server from the standard library, prometheus-client's
exposition for /metrics), so a stuck event loop cannot stop it from answering: `/healthz` asks
the event loop to run a no-op and answers 503 when it does not within two seconds; `/readyz`
runs the bot's readiness checks on the event loop (model or servers, database, Bot API).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socketserver
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.engine.base import Engine, ServedElsewhere
from bot.errors import ConfigError, ModelError
from bot.metrics import Metrics

log = logging.getLogger(__name__)

LOOP_WAIT = 2.0
"""Seconds /healthz waits for the event loop to run a no-op."""
READY_WAIT = 10.0
"""Seconds /readyz waits for its checks."""

ReadinessCheck = Callable[[], Coroutine[Any, Any, list[str]]]
"""Returns what keeps the bot from being ready (nothing: ready)."""


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("health endpoint: " + format, *args)


class HealthServer:
    """/healthz, /readyz and /metrics on `address` (host, port; port 0: any free one),
    answered from a thread."""

    def __init__(
        self, address: tuple[str, int], *, metrics: Metrics, loop: asyncio.AbstractEventLoop,
        ready: ReadinessCheck,
    ) -> None:
        self._address = address
        self._metrics = metrics
        self._loop = loop
        self._ready = ready
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_port)

    def start(self) -> None:
        host, port = self._address
        try:
            self._server = make_server(host, port, self._app, server_class=_ThreadingServer,
                                       handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} for /metrics: {exc.strerror}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http",
                                        daemon=True)
        self._thread.start()
        log.info("health and metrics on http://%s:%d (/healthz, /readyz, /metrics)", host,
                 self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the WSGI application -----------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body = generate_latest(self._metrics.registry)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        if path == "/healthz":
            status, text = self._healthz()
        elif path == "/readyz":
            status, text = self._readyz()
        else:
            status, text = "404 Not Found", "not found: try /healthz, /readyz or /metrics\n"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [text.encode("utf-8")]

    def _healthz(self) -> tuple[str, str]:
        answered = threading.Event()
        try:
            self._loop.call_soon_threadsafe(answered.set)
        except RuntimeError:
            return "503 Service Unavailable", "the event loop is closed\n"
        if not answered.wait(LOOP_WAIT):
            return "503 Service Unavailable", f"the event loop did not answer in {LOOP_WAIT:.0f} s\n"
        return "200 OK", "ok\n"

    def _readyz(self) -> tuple[str, str]:
        try:
            future: concurrent.futures.Future[list[str]] = asyncio.run_coroutine_threadsafe(
                self._ready(), self._loop
            )
        except RuntimeError as exc:
            return "503 Service Unavailable", f"not ready: the event loop is gone ({exc})\n"
        try:
            problems: list[str] = future.result(timeout=READY_WAIT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            problems = [f"the readiness checks did not finish in {READY_WAIT:.0f} s"]
        if problems:
            return "503 Service Unavailable", "".join(f"not ready: {p}\n" for p in problems)
        return "200 OK", "ready\n"


BOT_API_FRESH = 90.0
"""Seconds since the Bot API's last answer within which it counts as answering (a long poll
returns at least every 25 s; in webhook mode the check asks getMe when it is older)."""


async def check_ready(
    *, engine_ready: Callable[[], list[str]], database: Callable[[], Awaitable[None]],
    metrics: Metrics, ask_bot_api: Callable[[], Awaitable[object]] | None,
) -> list[str]:
    """What keeps the bot from being ready: the model (or its servers), the database, the
    Bot API. Each check is given by the caller; none of them raises."""
    problems = list(engine_ready())
    try:
        await database()
    except Exception as exc:  # any failure means not ready: say which
        problems.append(f"the database does not answer ({type(exc).__name__}: {exc})")
    if ask_bot_api is not None:
        if time.monotonic() - metrics.last_bot_api_answer > BOT_API_FRESH:
            try:
                await ask_bot_api()
            except Exception as exc:  # as above
                problems.append(f"the Telegram Bot API does not answer ({type(exc).__name__})")
    return problems


def engine_problems(engine: Engine) -> list[str]:
    """Whether a model is there to answer: loaded, or at least one of its servers up."""
    if isinstance(engine, ServedElsewhere):
        if not any(up for _, up, _ in engine.served_models()):
            return ["every model server is down"]
        return []
    try:
        _ = engine.info.name
    except ModelError as exc:
        return [f"no model is loaded ({exc})"]
    return []
