"""Downloading a file someone sent the bot (a voice note, an audio file, a round video, a photo,
a document) from the Bot API, within a byte limit.

One module for every feature that reads what people send (voice notes, issue 21; photos and
documents, issue 22): python-telegram-bot's `get_file`, then `download_to_memory` from the Bot
API's file URL (`file_url`: `api_file_url`, else derived from `api_url`). The cloud Bot API lets
bots download files up to 20 MB; `getFile` on a larger one answers "Bad Request: file is too
big", which arrives here as `FileTooBig`, as does a file whose size said so beforehand (nothing
is asked of Telegram then).
"""

from __future__ import annotations

import io
import logging

from telegram import Bot
from telegram.error import BadRequest, TelegramError

from bot.errors import UserError
from bot.i18n import _

log = logging.getLogger(__name__)

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
"""The largest file the cloud Bot API lets a bot download (20 MB)."""
_TOO_BIG = "file is too big"
"""What the Bot API answers getFile for a file past its limit (after "Bad Request: ")."""


class FileTooBig(UserError):
    """A file past the download limit (known from its size or from Telegram's refusal)."""

    def __init__(self, size: int | None, limit: int) -> None:
        megabytes = f"{limit / (1024 * 1024):g}"
        if size is None:
            text = _("That file is too big: Telegram lets bots download files up to "
                     "{limit} MB.", limit=megabytes)
        else:
            text = _("That file is {size} MB: Telegram lets bots download files up to "
                     "{limit} MB.", size=f"{size / (1024 * 1024):.1f}", limit=megabytes)
        super().__init__(text)
        self.size, self.limit = size, limit


class DownloadFailed(UserError):
    """Telegram did not give the file (a network error, an expired file id)."""

    def __init__(self) -> None:
        super().__init__(_("⚠️ I could not download that file from Telegram. Try sending it "
                           "again."))


def file_url(api_url: str, api_file_url: str | None = None) -> str:
    """The base of the Bot API's file downloads: `api_file_url` when set, else `api_url`'s
    `.../bot` as `.../file/bot` (Telegram's own layout, and a self-hosted server's)."""
    if api_file_url:
        return api_file_url.rstrip("/")
    base = api_url.rstrip("/")
    if base.endswith("/bot"):
        return base[: -len("/bot")] + "/file/bot"
    return base + "/file"


async def download(
    bot: Bot, file_id: str, *, size: int | None = None, limit: int = TELEGRAM_DOWNLOAD_LIMIT
) -> bytes:
    """The bytes of the file `file_id`. `size`: what the message said of it (None: unknown).

    Raises FileTooBig past `limit` (before any request when `size` says so), DownloadFailed
    when Telegram cannot give it."""
    if size is not None and size > limit:
        raise FileTooBig(size, limit)
    try:
        file = await bot.get_file(file_id)
        if file.file_size is not None and file.file_size > limit:
            raise FileTooBig(file.file_size, limit)
        buffer = io.BytesIO()
        await file.download_to_memory(buffer)
    except BadRequest as exc:
        if _TOO_BIG in exc.message.lower():
            raise FileTooBig(size, limit) from None
        log.warning("could not download file %s: %s", file_id, exc.message)
        raise DownloadFailed() from exc
    except (TelegramError, RuntimeError) as exc:  # RuntimeError: a File without a path
        log.warning("could not download file %s: %s", file_id, exc)
        raise DownloadFailed() from exc
    data = buffer.getvalue()
    if len(data) > limit:
        raise FileTooBig(len(data), limit)
    return data
