"""The bot's HTTP endpoint for its operator: `/healthz`, `/readyz` and `/metrics`.

It runs on threads of its own (a WSGI server from the standard library, prometheus-client's
exposition for /metrics), so a stuck event loop cannot stop it from answering: `/healthz` asks
the event loop to run a no-op and answers 503 when it does not within two seconds; `/readyz`
runs the bot's readiness checks on the event loop (model or servers, database, Bot API).

The work is bounded whoever connects: `WORKERS` threads answer, a connection beyond them is
refused at once, at most `READY_WAITERS` of them wait for a readiness check, and one check runs
at a time (requests meanwhile share its answer). Answers name problems only; the details (a
database's error text) go to the log. With a `token`, /metrics asks for it as a bearer token.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.engine.base import Engine, ServedElsewhere
from bot.errors import ConfigError, ModelError
from bot.metrics import Metrics

log = logging.getLogger(__name__)

LOOP_WAIT = 2.0
"""Seconds /healthz waits for the event loop to run a no-op."""
READY_WAIT = 10.0
"""Seconds /readyz waits for its checks."""
WORKERS = 4
"""Threads answering requests; a connection that finds them all busy is refused (503)."""
READY_WAITERS = 2
"""Requests that may wait for a readiness check at once: the other workers stay free for
/healthz and /metrics however many /readyz arrive."""
CONNECTION_TIMEOUT = 5.0
"""Seconds a connection may take to send its request (and to read the answer)."""
BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n")

ReadinessCheck = Callable[[], Coroutine[Any, Any, list[str]]]
"""Returns what keeps the bot from being ready (nothing: ready)."""


class _BoundedServer(WSGIServer):
    """A WSGI server answering on a fixed pool of threads; the accepting thread refuses a
    connection when every worker is busy instead of starting another thread."""

    request_queue_size = 64  # a burst waits in the kernel's backlog, not in threads

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler]) -> None:
        self._free = threading.BoundedSemaphore(WORKERS)
        self._pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="health")
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._free.acquire(blocking=False):
            _refuse(request)
            self.shutdown_request(request)
            return
        try:
            self._pool.submit(self._answer, request, client_address)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._free.release()
            self.shutdown_request(request)

    def _answer(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._free.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("health endpoint: a connection from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _refuse(request: socket.socket) -> None:
    try:
        request.settimeout(0.5)
        request.sendall(BUSY)
    except OSError:
        pass  # the client is gone or not reading: it is refused either way


class _QuietHandler(WSGIRequestHandler):
    timeout = CONNECTION_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("health endpoint: " + format, *args)


class HealthServer:
    """/healthz, /readyz and /metrics on `address` (host, port; port 0: any free one),
    answered from a bounded pool of threads. With `token`, /metrics answers only requests
    carrying `Authorization: Bearer <token>` (401 otherwise)."""

    def __init__(
        self, address: tuple[str, int], *, metrics: Metrics, loop: asyncio.AbstractEventLoop,
        ready: ReadinessCheck, token: str | None = None,
    ) -> None:
        self._address = address
        self._metrics = metrics
        self._loop = loop
        self._ready = ready
        self._token = token.encode("utf-8") if token else None
        self._server: _BoundedServer | None = None
        self._thread: threading.Thread | None = None
        self._checking: concurrent.futures.Future[list[str]] | None = None
        self._checking_lock = threading.Lock()
        self._ready_waiters = threading.BoundedSemaphore(READY_WAITERS)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_port)

    def start(self) -> None:
        host, port = self._address
        try:
            self._server = _BoundedServer((host, port), _QuietHandler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} for /metrics: {exc.strerror}") from None
        self._server.set_app(self._app)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http",
                                        daemon=True)
        self._thread.start()
        log.info("health and metrics on http://%s:%d (/healthz, /readyz, /metrics%s)", host,
                 self.port, ", with a bearer token" if self._token else "")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the WSGI application -----------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            if not self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
                start_response("401 Unauthorized", [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("WWW-Authenticate", 'Bearer realm="metrics"'),
                ])
                return [b"a bearer token is required (metrics_token)\n"]
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

    def _authorized(self, header: str) -> bool:
        if self._token is None:
            return True
        scheme, _, given = header.partition(" ")
        # compare_digest takes as long whatever the bytes that differ: the token is not guessed
        # a character at a time from the answers' timing.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), self._token)

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
        if not self._ready_waiters.acquire(blocking=False):
            return "503 Service Unavailable", "busy: readiness checks are already waiting\n"
        try:
            problems = self._readiness()
        finally:
            self._ready_waiters.release()
        if problems:
            return "503 Service Unavailable", "".join(f"not ready: {p}\n" for p in problems)
        return "200 OK", "ready\n"

    def _readiness(self) -> list[str]:
        """The running check's answer, or a new check's: never two at a time."""
        with self._checking_lock:
            if self._checking is None or self._checking.done():
                try:
                    self._checking = asyncio.run_coroutine_threadsafe(self._ready(), self._loop)
                except RuntimeError:
                    log.warning("/readyz: the event loop is not running")
                    return ["the event loop is not running"]
            future = self._checking
        try:
            return future.result(timeout=READY_WAIT)
        except concurrent.futures.TimeoutError:
            future.cancel()  # the next request starts a fresh check
            log.warning("/readyz: the readiness checks did not finish in %.0f s", READY_WAIT)
            return [f"the readiness checks did not finish in {READY_WAIT:.0f} s"]
        except concurrent.futures.CancelledError:
            return [f"the readiness checks did not finish in {READY_WAIT:.0f} s"]
        except Exception:
            log.exception("/readyz: the readiness checks failed")
            return ["the readiness checks failed"]


BOT_API_FRESH = 90.0
"""Seconds since the Bot API's last answer within which it counts as answering (a long poll
returns at least every 25 s; in webhook mode the check asks getMe when it is older)."""


async def check_ready(
    *, engine_ready: Callable[[], list[str]], database: Callable[[], Awaitable[None]],
    metrics: Metrics, ask_bot_api: Callable[[], Awaitable[object]] | None,
) -> list[str]:
    """What keeps the bot from being ready: the model (or its servers), the database, the
    Bot API, each named in a few words (the details, which may hold addresses or error texts,
    go to the log). Each check is given by the caller; none of them raises."""
    problems = list(engine_ready())
    try:
        await database()
    except Exception as exc:  # any failure means not ready: say which, the details to the log
        log.warning("/readyz: the database does not answer: %s: %s", type(exc).__name__, exc)
        problems.append("the database does not answer")
    if ask_bot_api is not None:
        if time.monotonic() - metrics.last_bot_api_answer > BOT_API_FRESH:
            try:
                await ask_bot_api()
            except Exception as exc:  # as above
                log.warning("/readyz: the Telegram Bot API does not answer: %s: %s",
                            type(exc).__name__, exc)
                problems.append("the Telegram Bot API does not answer")
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
        log.warning("/readyz: no model is loaded: %s", exc)
        return ["no model is loaded"]
    return []
