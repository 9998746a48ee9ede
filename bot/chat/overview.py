"""/settings: the running model, every knob, the system prompt, memory, how full the chat's
context window is, and its summary."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.chat_settings import NO_SYSTEM, ChatSettings
from bot.chat.preparation import ReplyPreparation
from bot.chat.running import RunningModel
from bot.chat.servers import without_passwords
from bot.chat.summaries import summary_on
from bot.core.chats import ChatRef
from bot.core.knobs import KNOBS
from bot.core.params import GenerationParams
from bot.core.window import NoQuestion
from bot.engine.base import MemoryReport
from bot.engine.drafting import Drafts, DraftStats
from bot.errors import InputTooLong
from bot.i18n import N_, _, _n
from bot.settings import Settings
from bot.store import repository as repo
from bot.store.schema import ChatRow, TurnRow

NOT_SENT = N_("(not used: an OpenAI-compatible server has no such setting)")
SERVERS_HIDDEN = N_("Memory: held by the model servers ({n}); the bot's admins see them here.")


class SettingsOverview:
    """The text of /settings in a chat."""

    def __init__(
        self, *, settings: Settings, sessions: async_sessionmaker[AsyncSession],
        model: RunningModel, chat_settings: ChatSettings, preparation: ReplyPreparation,
    ) -> None:
        self._settings, self._sessions, self._model = settings, sessions, model
        self._chat_settings, self._preparation = chat_settings, preparation

    async def text(self, ref: ChatRef, *, servers: bool = False) -> str:
        """/settings: the model, every knob, the system prompt, memory and context use.

        The remote engine's model servers (addresses, errors) are named only with `servers`
        (the bot's admins), and never with a password."""
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            params = self._chat_settings.params_of(chat)
            total = await repo.count_turns(session, chat)
            used, kept = await self._context_use(session, chat, params, total)
            await session.commit()
        engine = self._model.engine
        info = engine.info
        lines = [_("Model: {name} ({file}), chat format: {chat_format}", name=info.name,
                   file=info.path.name, chat_format=self._model.chat_format.name)]
        lines += [
            f"/{knob.command} ({knob.flag}) = {knob.format(params[knob.name])}"
            + ("" if info.knobs is None or knob.name in info.knobs else f" {_(NOT_SENT)}")
            for knob in KNOBS
        ]
        system = self._chat_settings.system_of(chat)
        if system is None:
            system = self._model.chat_format.default_system or _(NO_SYSTEM)
        lines.append(f"/system = {_shorten(system, 200)}")
        lines.append(self._memory_line(engine.memory_report(), servers=servers))
        stats = engine.draft_stats() if servers and isinstance(engine, Drafts) else None
        if stats is not None:  # the bot's admins see how speculative decoding does
            lines.append(draft_line(stats))
        people = {row.speaker or "someone" for row in kept if row.role == "user"}
        counts = dict(used=used, n_ctx=params.n_ctx, in_window=len(kept), total=total,
                      reserved=params.n_predict)
        if chat.kind not in ("private", "console") and people:
            lines.append(_n(
                "Context: {used}/{n_ctx} tokens ({in_window} of {total} messages in the window "
                "from {n} person, {reserved} reserved for the reply)",
                "Context: {used}/{n_ctx} tokens ({in_window} of {total} messages in the window "
                "from {n} people, {reserved} reserved for the reply)",
                len(people), **counts,
            ))
        else:
            lines.append(_(
                "Context: {used}/{n_ctx} tokens ({in_window} of {total} messages in the "
                "window, {reserved} reserved for the reply)",
                **counts,
            ))
        lines.append(self._summary_line(chat))
        return "\n".join(lines)

    def _memory_line(self, report: MemoryReport, *, servers: bool) -> str:
        if report.servers and not servers:
            return _(SERVERS_HIDDEN, n=len(report.servers))
        return without_passwords(_("Memory: {summary}", summary=report.summary()))

    def _summary_line(self, chat: ChatRow) -> str:
        if not self._settings.summary_tokens:
            return _("Summary: off (summary_tokens = 0)")
        if not summary_on(chat):
            return _("Summary: off for this chat (/summary on)")
        if not chat.summary:
            return _("Summary: none yet (written when messages leave the window)")
        return _("Summary of older messages (/summary): {summary}",
                 summary=_shorten(chat.summary, 200))

    async def _context_use(
        self, session: AsyncSession, chat: ChatRow, params: GenerationParams, total: int
    ) -> tuple[int, list[TurnRow]]:
        """The tokens the chat's next window takes, and the stored turns in it (none fit: the
        whole budget, none)."""
        if total:
            try:
                window, kept = await self._preparation.fit(session, chat, params,
                                                           tell_summaries=False)
                return window.n_tokens, kept
            except InputTooLong:
                return params.prompt_budget, []
            except NoQuestion:
                pass
        prompt = self._model.chat_format.render(self._chat_settings.system_of(chat), [])
        return await self._model.engine.count_tokens(prompt), []


def draft_line(stats: DraftStats) -> str:
    """/settings' line for the bot's admins on the pool's drafting (speculative decoding)."""
    if not stats.drafted:
        return _("Drafting ({source}): no token drafted yet", source=stats.source)
    return _("Drafting ({source}): {accepted} of {drafted} drafted tokens accepted ({rate}%)",
             source=stats.source, accepted=stats.accepted, drafted=stats.drafted,
             rate=round(100 * stats.accepted / stats.drafted))


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
