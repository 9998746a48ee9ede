"""The command's log: one format, the bot token never in a line, quiet libraries."""

from __future__ import annotations

import logging
import sys

from bot.settings import Settings


class RedactToken(logging.Filter):
    """Keeps the bot token out of every log line (httpx logs request URLs)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        if self._token:
            message = record.getMessage()
            if self._token in message:
                record.msg = message.replace(self._token, "<token>")
                record.args = None
            # An exception's text quotes the URL it failed on: the traceback is formatted here,
            # once, and the handlers' formatters use this redacted copy (they never redo it).
            if record.exc_info and not record.exc_text:
                record.exc_text = _TRACEBACKS.formatException(record.exc_info)
            if record.exc_text and self._token in record.exc_text:
                record.exc_text = record.exc_text.replace(self._token, "<token>")
        return True


_TRACEBACKS = logging.Formatter()
"""Formats the tracebacks RedactToken redacts, as every logging.Formatter would."""


def setup_logging(settings: Settings, *, quiet: bool = False) -> logging.Handler:
    level = logging.WARNING if quiet else getattr(logging, settings.log_level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if settings.token is not None:
        handler.addFilter(RedactToken(settings.token.get_secret_value()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "telegram.ext.ExtBot", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # In the terminal commands our own one-line errors say it; the service log keeps llama.cpp's.
    logging.getLogger("llama.cpp").setLevel(logging.CRITICAL if quiet else max(level, logging.WARNING))
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    return handler
