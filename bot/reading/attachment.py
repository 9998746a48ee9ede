"""What a front end hands the chat layer besides text: an attachment (a picture, a document,
and the voice notes of `bot.speech`), described, with a way to fetch its bytes.

The front ends only say what was sent; the chat layer (`bot.chat.reading`) decides what it
becomes in a prompt. Today a picture becomes the text read from it (OCR) and a document its
passages. A vision model (a GGUF with its `mmproj` projector, or a multimodal server) would
take the picture itself: the chat side would `fetch()` the bytes and put an image in the
request instead of the OCR text, and neither Telegram's handlers nor the console change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

AttachmentKind = Literal["image", "document"]


@dataclass(frozen=True, kw_only=True)
class Attachment:
    """A file someone sent: its kind, name and MIME type (as the sender's app gave them), its
    size if known, and `fetch` for its bytes (a download from Telegram, a file the console
    reads). `message_id` is the message that brought it; `author` who sent it where that is
    not the asker (a replied message), `by_bot` if the bot did."""

    kind: AttachmentKind
    fetch: Callable[[], Awaitable[bytes]]
    name: str | None = None
    mime: str | None = None
    size: int | None = None
    message_id: int | None = None
    author: str | None = None
    by_bot: bool = False
