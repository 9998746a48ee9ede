"""The Bot API's HTTP requests, counted: python-telegram-bot's httpx request class with every
call's method and HTTP status recorded in the bot's metrics."""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx
from telegram.request import HTTPXRequest

from bot.metrics import Metrics


class MeteredRequest(HTTPXRequest):
    """`HTTPXRequest` that records each call (`alpaca_bot_bot_api_calls_total`)."""

    def __init__(self, metrics: Metrics, **options: Any) -> None:
        client = dict(options.pop("httpx_kwargs", None) or {})
        client.setdefault("verify", tls_context())
        super().__init__(httpx_kwargs=client, **options)
        self._metrics = metrics

    async def do_request(self, url: str, method: str, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        # A file download (GET from the file URL) is one label, whatever the file's name.
        api_method = "download" if method == "GET" else (
            url.rstrip("/").rsplit("/", 1)[-1] or "unknown")
        try:
            code, payload = await super().do_request(url, method, *args, **kwargs)
        except Exception:
            self._metrics.bot_api_call(api_method, None)
            raise
        self._metrics.bot_api_call(api_method, code)
        return code, payload


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's own default verification (certifi's authorities, or SSL_CERT_FILE/SSL_CERT_DIR),
    built once per process: reading the authorities costs ~20 ms of CPU, and every start of the
    bot made two clients (a test run starts the bot hundreds of times)."""
    return httpx.create_ssl_context()
