"""python-telegram-bot's rate limiter, with one warning line per flood ban.

With `max_retries=0` (the streamer honours bans itself) PTB's `AIORateLimiter` passes each
`RetryAfter` on and logs it as an ERROR with a traceback ("Rate limit hit after maximum of 0
retries"), though nothing failed: the call is made again once the ban is over.
"""

from __future__ import annotations

import datetime as dtm
import logging
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import AIORateLimiter
from telegram.warnings import PTBDeprecationWarning

log = logging.getLogger(__name__)

PTB_LIMITER_LOGGER = "telegram.ext.AIORateLimiter"


def retry_seconds(exc: RetryAfter) -> float:
    """How long a flood ban lasts. `retry_after` is an int (PTB warns it will become a
    timedelta) or, with PTB_TIMEDELTA set, already a timedelta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: int | float | dtm.timedelta = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


class _DropPassedOnBans(logging.Filter):
    """Drops PTB's ERROR for a ban it passed on (`FloodLimiter` logs its own line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, RetryAfter)


class FloodLimiter(AIORateLimiter):
    """`AIORateLimiter` that logs each flood ban as one warning: method, chat and seconds."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        ptb = logging.getLogger(PTB_LIMITER_LOGGER)
        if not any(isinstance(f, _DropPassedOnBans) for f in ptb.filters):
            ptb.addFilter(_DropPassedOnBans())

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        try:
            return await super().process_request(
                callback, args, kwargs, endpoint, data, rate_limit_args
            )
        except RetryAfter as exc:
            log.warning("flood control: Telegram holds %s to chat %s for %.0f s", endpoint,
                        data.get("chat_id", "-"), retry_seconds(exc))
            raise
