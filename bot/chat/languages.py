"""Which language a chat is answered in: its /lang choice, else the language of the person being
answered (Telegram's `language_code`, the console's locale)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import i18n
from bot.chat.recent import MOST_CHATS, RecentChats
from bot.core.chats import ChatRef
from bot.errors import InvalidParameter
from bot.i18n import _
from bot.store import repository as repo
from bot.store.schema import ChatRow

AUTO = "auto"


class ChatLanguages:
    """Reads and changes /lang; a forum group's choice holds in all its topics."""

    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], most: int = MOST_CHATS
    ) -> None:
        self._sessions = sessions
        self._chosen: RecentChats[int, str | None] = RecentChats(most)
        """The choices of the chats seen last (one process serves a database: see
        instance_lock); an older one is read again."""

    async def chosen(self, ref: ChatRef) -> str | None:
        """The chat's /lang (None: auto)."""
        if ref.chat_id not in self._chosen:
            # Read only: every update asks, also ones the bot then ignores (no row made for them).
            async with self._sessions() as session:
                chat = await session.get(ChatRow, ref.chat_id)
            language = chat.language if chat is not None else None
            self._chosen[ref.chat_id] = language if language in i18n.languages() else None
        return self._chosen[ref.chat_id]

    async def language_for(self, ref: ChatRef, code: str | None) -> str:
        """The language to answer someone whose own language is `code` in this chat."""
        return await self.chosen(ref) or i18n.language_of(code)

    async def show(self, ref: ChatRef) -> str:
        chosen = await self.chosen(ref)
        choices = "|".join((AUTO, *i18n.languages()))
        if chosen is None:
            return _("Language: auto (each person's Telegram language; now {name}). "
                     "Change it with /lang {choices}.",
                     name=i18n.language_name(i18n.current()), choices=choices)
        return _("Language: {name} for everyone here. Change it with /lang {choices}.",
                 name=i18n.language_name(chosen), choices=choices)

    async def change(self, ref: ChatRef, raw: str, *, own: str | None = None) -> str:
        """Store the chat's choice; the answer already speaks it (auto: `own`, the asker's
        language, when given)."""
        value = raw.strip().lower()
        language = None if value == AUTO else value if value in i18n.languages() else ""
        if language == "":
            raise InvalidParameter(_("Unknown language {value!r}; choose one of: {choices}.",
                                     value=raw.strip(),
                                     choices=", ".join((AUTO, *i18n.languages()))))
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, _whole_chat(ref))
            await repo.set_chat_values(session, chat.id, language=language)
            await session.commit()
        self._chosen[ref.chat_id] = language
        if language is None:
            if own is not None:
                i18n.use(own)
            return _("Language: auto. Everyone is answered in their own Telegram language.")
        i18n.use(language)  # this answer already speaks it
        return _("Language set to {name} for everyone in this chat.",
                 name=i18n.language_name(language))


def _whole_chat(ref: ChatRef) -> ChatRef:
    """A forum topic's group: /lang is the chat's, not one topic's."""
    return ChatRef(ref.chat_id, ref.kind, ref.title)
