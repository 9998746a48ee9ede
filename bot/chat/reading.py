"""What the front ends' attachments become in a question (see `bot.reading.attachment`): a
picture the text read from it (OCR), a document a stored document the question is about; both
read off the event loop, each waiting its fair turn among the replies for the CPU. A picture with
no readable text is answered honestly instead: the bot reads text in pictures, it does not
see them (yet)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from bot.chat.documents import ChatDocuments, TakenDocument
from bot.chat.running import RunningModel
from bot.core.chats import ChatRef
from bot.engine.base import CancelToken, Queued, TakesTurns
from bot.errors import UserError
from bot.i18n import _
from bot.reading.attachment import Attachment, AttachmentKind
from bot.reading.context import ContextItem
from bot.reading.document import ReadingError
from bot.reading.extraction import is_image
from bot.reading.ocr import ImageReader, ImageText
from bot.settings import Settings

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 20 << 20
"""The largest file read, as Telegram's Bot API lets bots download (the console's too)."""
OCR_SECONDS = 90.0
"""How long reading one picture may take once its turn came."""
Place = Callable[[Queued], Awaitable[None]]
"""Told each place in the queue while a picture waits for its turn."""


class NothingRead(UserError):
    """A picture with no text the OCR could read."""


class Reading:
    """Attachments into context items."""

    def __init__(
        self, *, settings: Settings, model: RunningModel, documents: ChatDocuments,
    ) -> None:
        self._settings, self._model, self._documents = settings, model, documents
        self._images = ImageReader(max_pixels=settings.image_max_pixels,
                                   threads=settings.threads)

    async def context_of(
        self, ref: ChatRef, attachment: Attachment, *, user_id: int | None = None,
        speaker: str | None = None, on_place: Place | None = None,
    ) -> tuple[ContextItem, TakenDocument | None]:
        """What `attachment` brings to a question, and the document it stored (if a new one).
        Raises NothingRead, a `ReadingError` or the download's `UserError` with what to say."""
        if attachment.kind == "image":
            return await self.image_item(ref, attachment, on_place=on_place), None
        taken = None
        known = (await self._documents.find(ref, attachment.message_id)
                 if attachment.message_id is not None else None)
        if known is None:
            data = await attachment.fetch()
            async with self._turn(ref, on_place):
                taken = await self._documents.take(
                    ref, attachment.name or "document", attachment.mime, data,
                    message_id=attachment.message_id, user_id=user_id, speaker=speaker)
            document_id, name = taken.id, taken.name
        else:
            document_id, name = known.id, known.name
        return ContextItem(kind="document", name=name, document_id=document_id), taken

    async def read_path(self, ref: ChatRef, path: Path) -> tuple[ContextItem, TakenDocument | None]:
        """A file on this machine (the console's /read), read as if it had been sent: a
        picture by its name's suffix, anything else as a document."""
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except OSError as exc:
            raise ReadingError(_("Cannot read {path}: {reason}", path=path,
                                 reason=exc.strerror or exc)) from None
        if size > MAX_FILE_BYTES:
            raise ReadingError(_("{path} is {size} MB; I read files up to {limit} MB.", path=path,
                                 size=f"{size / (1 << 20):.1f}", limit=MAX_FILE_BYTES >> 20))

        async def fetch() -> bytes:
            return await asyncio.to_thread(path.read_bytes)

        kind: AttachmentKind = "image" if is_image(path.name, None) else "document"
        return await self.context_of(ref, Attachment(kind=kind, fetch=fetch, name=path.name,
                                                     size=size))

    async def image_item(
        self, ref: ChatRef, attachment: Attachment, *, on_place: Place | None = None
    ) -> ContextItem:
        """The text read from a picture, as a context item (NothingRead where there is none)."""
        found = await self.read_image(ref, await attachment.fetch(), on_place=on_place)
        if not found.lines:
            raise NothingRead(_("I found no text in this picture. I read the text in pictures "
                                "(screenshots, signs, pages), but I cannot see images yet."))
        text = found.text[: self._settings.max_input_chars]
        return ContextItem(kind="image", text=text, author=attachment.author,
                           by_bot=attachment.by_bot)

    async def read_image(
        self, ref: ChatRef, data: bytes, *, on_place: Place | None = None
    ) -> ImageText:
        """OCR on a worker thread, in a fair turn where the engine shares this CPU."""
        async with self._turn(ref, on_place):
            return await self._ocr(data)

    @contextlib.asynccontextmanager
    async def _turn(self, ref: ChatRef, on_place: Place | None) -> AsyncIterator[None]:
        """A fair turn among the replies for reading (OCR, a document's text), where the
        engine's model shares this machine's CPU; at once where it runs elsewhere. The model
        is held meanwhile, as a reply holds it (a /model switch waits)."""
        async with self._model.serving(background=True) as engine:
            if not isinstance(engine, TakesTurns):
                yield
                return
            key = str(ref.chat_id)
            async with engine.turn(chat_key=key, share=key, cancel=CancelToken(),
                                   on_place=on_place):
                yield

    async def _ocr(self, data: bytes) -> ImageText:
        try:
            async with asyncio.timeout(OCR_SECONDS):  # not wait_for, which can lose a cancellation in 3.11
                found = await asyncio.to_thread(self._images.read, data)
        except TimeoutError:
            raise ReadingError(_("Reading this picture took too long; I gave up on it.")
                               ) from None
        log.info("read %d lines of text in a %dx%d picture in %.1f s", len(found.lines),
                 found.width, found.height, found.seconds)
        return found
