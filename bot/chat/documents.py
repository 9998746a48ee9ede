"""A conversation's documents: read off the event loop (bounded in time), split into passages
and stored; listed by /docs; and, for each question, the passages most relevant to it within
`document_tokens` (only those are evaluated, never the whole document). A conversation's BM25
index is built once from its stored passages and kept while its documents stay the same."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.running import RunningModel
from bot.core.chats import ChatRef
from bot.core.params import GenerationParams
from bot.core.prompt import Segment
from bot.i18n import _, _n
from bot.reading.budget import choose_passages
from bot.reading.context import FramedPassage
from bot.reading.document import ExtractedDocument, ReadingError
from bot.reading.extraction import extract
from bot.reading.passages import Passage, passage_label, split_passages
from bot.reading.retrieval import PassageIndex
from bot.settings import Settings
from bot.store import documents as store
from bot.store import repository as repo
from bot.store.schema import ChatRow, DocumentRow

log = logging.getLogger(__name__)

READ_SECONDS = 120.0
"""How long reading one document may take (a 20 MB PDF's text layer takes seconds)."""
KEPT_INDEXES = 8
"""Conversations whose passage index stays in memory (the rest are built again when asked)."""
FIRST_PASSAGES = 6
"""Passages a question about one document gets when none shares a word with it ("summarize
this"): the document's beginning."""


@dataclass(frozen=True)
class TakenDocument:
    """A document read and stored: what the acknowledgement says of it."""

    id: int
    name: str
    pages: int | None
    words: int
    truncated: bool
    kept_chars: int

    def acknowledgement(self, *, asked: bool) -> str:
        """What the bot says on receiving it (`asked`: a question about it follows)."""
        size = (_n("{n} page", "{n} pages", self.pages) if self.pages
                else _n("{n} word", "{n} words", self.words))
        if asked:
            text = _("📄 Read {name} ({size}).", name=self.name, size=size)
        else:
            text = _("📄 Read {name} ({size}); ask me about it.", name=self.name, size=size)
        if self.truncated:
            text += "\n" + _("⚠️ It is longer than I keep: I read its first {chars} characters.",
                             chars=f"{self.kept_chars:,}")
        return text


@dataclass
class _Index:
    """A conversation's passages and their BM25 index, for its current documents."""

    documents: tuple[int, ...]
    passages: list[tuple[int, FramedPassage]]
    """(document id, the passage labelled) by index."""
    index: PassageIndex


class ChatDocuments:
    """Documents in, passages out."""

    def __init__(
        self, *, settings: Settings, sessions: async_sessionmaker[AsyncSession],
        model: RunningModel,
    ) -> None:
        self._settings, self._sessions, self._model = settings, sessions, model
        self._indexes: OrderedDict[int, _Index] = OrderedDict()

    async def take(
        self, ref: ChatRef, name: str, mime: str | None, data: bytes, *,
        message_id: int | None = None, user_id: int | None = None, speaker: str | None = None,
    ) -> TakenDocument:
        """Read a document and store it in the conversation `ref`; a `ReadingError` says why
        it cannot be read."""
        limit = self._settings.document_max_chars
        try:
            async with asyncio.timeout(READ_SECONDS):  # not wait_for, which can lose a cancellation in 3.11
                document, passages = await asyncio.to_thread(_read, name, mime, data, limit)
        except TimeoutError:
            raise ReadingError(_("Reading this document took too long; I gave up on it.")
                               ) from None
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            row = await store.add_document(session, chat.id, name, document, passages,
                                           message_id=message_id, user_id=user_id,
                                           speaker=speaker)
            await session.commit()
        log.info("document %d read into conversation %d: %s, %d passages", row.id, chat.id,
                 document.kind, len(passages))
        return TakenDocument(row.id, name, document.pages, document.words, document.truncated,
                             document.chars)

    async def find(self, ref: ChatRef, message_id: int) -> DocumentRow | None:
        """The current document a Telegram message brought to the conversation, if any."""
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            await session.commit()
            row = await store.document_by_message(session, chat.id, message_id)
        return row if row is not None and row.current else None

    async def listing(self, ref: ChatRef) -> str:
        """/docs: the documents questions here draw on."""
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            await session.commit()
            rows = await store.current_documents(session, chat.id)
        if not rows:
            return _("No documents here. Send me a text file, a PDF or a Word .docx and ask "
                     "about it; /reset puts the documents aside.")
        lines = [_("Documents I draw on here (until /reset):")]
        for row in rows:
            size = (_n("{n} page", "{n} pages", row.pages) if row.pages
                    else _n("{n} word", "{n} words", row.words))
            cut = _(", cut at the limit") if row.truncated else ""
            lines.append(f"📄 {row.name} ({size}{cut}), {row.created_at:%Y-%m-%d}")
        return "\n".join(lines)

    def budget(self, params: GenerationParams) -> int:
        """The tokens a question's passages may take: `document_tokens`, else a third of the
        window, and never more than half of what the prompt may hold."""
        wanted = self._settings.document_tokens or params.n_ctx // 3
        return max(min(wanted, params.prompt_budget // 2), 0)

    async def passages_for(
        self, session: AsyncSession, chat: ChatRow, question: str, params: GenerationParams,
        *, about: int | None = None,
    ) -> list[FramedPassage]:
        """The passages of the conversation's documents most relevant to `question`, best
        first, within the budget (`about`: only that document's, its beginning where none
        matches). None where the conversation has no documents or nothing matches."""
        index = await self._index(session, chat)
        if index is None:
            return []
        within = None
        if about is not None:
            within = {i for i, (owner, _p) in enumerate(index.passages) if owner == about}
        hits = index.index.search(question, within=within)
        ranked = [index.passages[hit.index][1] for hit in hits]
        if not ranked and within:
            ranked = [index.passages[i][1] for i in sorted(within)[:FIRST_PASSAGES]]
        if not ranked:
            return []
        chosen, used = await choose_passages(ranked, budget=self.budget(params),
                                             count=self._count)
        log.debug("conversation %d: %d passages, %d tokens, for a question", chat.id,
                  len(chosen), used)
        return chosen

    async def _count(self, text: str) -> int:
        return await self._model.engine.count_tokens((Segment(text, False),))

    async def _index(self, session: AsyncSession, chat: ChatRow) -> _Index | None:
        """The conversation's index, built from the store when its documents changed."""
        rows = await store.current_documents(session, chat.id)
        if not rows:
            self._indexes.pop(chat.id, None)
            return None
        key = tuple(row.id for row in rows)
        kept = self._indexes.get(chat.id)
        if kept is not None and kept.documents == key:
            self._indexes.move_to_end(chat.id)
            return kept
        by_id = {row.id: row for row in rows}
        passages = [
            (p.document_id, FramedPassage(
                passage_label(by_id[p.document_id].name,
                              Passage(p.seq, p.text, p.page, p.first_line, p.last_line),
                              by_id[p.document_id].unit),  # type: ignore[arg-type]
                p.text))
            for p in await store.passages_of(session, key)
        ]
        index = await asyncio.to_thread(PassageIndex, [p.text for _d, p in passages])
        built = _Index(key, passages, index)
        self._indexes[chat.id] = built
        while len(self._indexes) > KEPT_INDEXES:
            self._indexes.popitem(last=False)
        return built


def _read(name: str, mime: str | None, data: bytes, limit: int
          ) -> tuple[ExtractedDocument, list[Passage]]:
    """A document's text and passages (a thread's work)."""
    document = extract(name, mime, data, max_chars=limit)
    return document, split_passages(document.sections)
