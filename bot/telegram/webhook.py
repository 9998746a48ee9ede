"""The webhook server: Telegram POSTs each update to webhook_url, a TLS proxy forwards it here,
and the update joins the Application's queue as python-telegram-bot's Updater would put it.

Our own small Tornado server instead of the Updater's: that one reads a body of up to Tornado's
default 100 MB before it looks at the secret, and compares the secret with `!=`. Here a request
is judged on its headers before its body is read: without the secret (compared in constant time)
it gets 403, and a body over MAX_UPDATE_BYTES gets 413 or a closed connection, so whoever finds
the URL makes the bot buffer nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import tornado.web
from telegram import Bot, Update
from telegram.error import RetryAfter
from telegram.ext import ExtBot
from tornado.httpserver import HTTPServer

log = logging.getLogger(__name__)

MAX_UPDATE_BYTES = 1 << 20
"""The largest body accepted: an update is one message or button press (4096 characters of
text, a caption, entities, a replied-to message), far below a megabyte."""
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
BODY_TIMEOUT = 30.0
"""Seconds a request may take to send its body."""
IDLE_TIMEOUT = 120.0
"""Seconds a kept-alive connection may idle (Telegram reuses its connections)."""
MAX_RETRY_WAIT = 5.0
"""The longest flood wait setWebhook is retried after (a quick restart gets retry_after 1)."""


@tornado.web.stream_request_body
class _UpdateHandler(tornado.web.RequestHandler):
    """One POSTed update: headers checked first, then the body read and queued."""

    SUPPORTED_METHODS = ("POST",)

    def initialize(self, bot: Bot, queue: asyncio.Queue[object], secret: bytes) -> None:
        self._bot = bot
        self._queue = queue
        self._secret = secret
        self._body = bytearray()

    def prepare(self) -> None:
        # Runs once the headers are in and before any of the body is read.
        given = self.request.headers.get(SECRET_HEADER, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, self._secret):
            raise tornado.web.HTTPError(HTTPStatus.FORBIDDEN)
        length = self.request.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_UPDATE_BYTES:
            raise tornado.web.HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        if self.request.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            raise tornado.web.HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE)

    def data_received(self, chunk: bytes) -> None:
        self._body += chunk  # at most MAX_UPDATE_BYTES: the server's max_body_size ends the rest

    async def post(self) -> None:
        try:
            data = json.loads(self._body)
            update = Update.de_json(data, self._bot) if isinstance(data, dict) else None
        except Exception:  # malformed JSON or not an update: Telegram never sends either
            update = None
        if update is None:
            raise tornado.web.HTTPError(HTTPStatus.BAD_REQUEST)
        if isinstance(self._bot, ExtBot):
            self._bot.insert_callback_data(update)
        await self._queue.put(update)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish()  # the status says it; no page for whoever probes the URL


class WebhookServer:
    """Serves `path` on (host, port) with plain HTTP, for the TLS proxy in front of it."""

    def __init__(self, *, bot: Bot, queue: asyncio.Queue[object], path: str, secret: str) -> None:
        handler_args = {"bot": bot, "queue": queue, "secret": secret.encode("utf-8")}
        self._app = tornado.web.Application(
            [(rf"{re.escape(path.rstrip('/'))}/?", _UpdateHandler, handler_args)],
            log_function=_log_request,
        )
        self._server: HTTPServer | None = None

    def start(self, host: str, port: int) -> None:
        """Listen now (OSError when the port is taken); requests are answered on this loop."""
        server = HTTPServer(
            self._app, max_body_size=MAX_UPDATE_BYTES, body_timeout=BODY_TIMEOUT,
            idle_connection_timeout=IDLE_TIMEOUT,
        )
        server.listen(port, address=host)
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None


def _log_request(handler: tornado.web.RequestHandler) -> None:
    log.debug("webhook: %s %d from %s", handler.request.method, handler.get_status(),
              handler.request.remote_ip)


async def set_webhook(bot: Bot, *, url: str, secret: str, allowed_updates: list[str]) -> None:
    """Tell Telegram where updates go. A flood wait (a quick restart) is waited out once."""
    for attempt in (1, 2):
        try:
            await bot.set_webhook(url=url, secret_token=secret, allowed_updates=allowed_updates,
                                  drop_pending_updates=False)
            return
        except RetryAfter as exc:
            wait = exc.retry_after
            seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
            if attempt == 2 or seconds > MAX_RETRY_WAIT:
                raise
            await asyncio.sleep(seconds)
