"""A chat's settings: the knob commands (/temp, /ctx, ...), /system, /reset and /summary, and
what a chat's stored values amount to under the running model's limits."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.running import RunningModel
from bot.chat.summaries import summary_on
from bot.core.chats import ChatRef
from bot.core.knobs import KNOBS, Knob
from bot.core.params import GenerationParams, clamp_to_limits, parse_value, with_value
from bot.errors import InvalidParameter
from bot.i18n import N_, _, _n
from bot.settings import Settings
from bot.store import repository as repo
from bot.store.schema import ChatRow

MAX_SYSTEM_CHARS = 4000
NO_SYSTEM = N_("(none set: the chat template's own default applies)")


class ChatSettings:
    """Reads and changes the per-chat values; every answer is the text a user sees."""

    def __init__(
        self, *, settings: Settings, sessions: async_sessionmaker[AsyncSession], model: RunningModel
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._model = model

    # -- what a chat's stored values amount to ---------------------------------------------

    def params_of(self, chat: ChatRow) -> GenerationParams:
        """The chat's values: its own where stored, the configured defaults elsewhere, fitted
        into the running model's limits."""
        values = self._settings.generation_defaults().as_dict()
        if chat.parent is not None:  # a forum topic: the group's values, then its own
            values.update(repo.stored_knobs(chat.parent))
        values.update(repo.stored_knobs(chat))
        params, _changes = clamp_to_limits(GenerationParams(**values), self._model.limits)
        return params

    def system_of(self, chat: ChatRow) -> str | None:
        if chat.system_prompt is not None:
            return chat.system_prompt
        if chat.parent is not None and chat.parent.system_prompt is not None:
            return chat.parent.system_prompt
        return self._settings.system_prompt

    async def params(self, ref: ChatRef) -> GenerationParams:
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            await session.commit()
            return self.params_of(chat)

    # -- the knob commands -------------------------------------------------------------------

    async def show(self, ref: ChatRef, knob: Knob) -> str:
        value = (await self.params(ref))[knob.name]
        default = self._settings.default_of(knob)
        if knob.choices:
            return _(
                "{flag} {value} — {help}. One of {choices}, default {default}. Change it with "
                "/{command} {choices}.",
                flag=knob.flag, value=knob.format(value), help=_(knob.help),
                choices=knob.range_text(), default=knob.format(default), command=knob.command,
            )
        return _(
            "{flag} {value} — {help}. Range {range}, default {default}. Change it with "
            "/{command} VALUE.",
            flag=knob.flag, value=knob.format(value), help=_(knob.help),
            range=knob.range_text(self._model.limits.maximum(knob)),
            default=knob.format(default), command=knob.command,
        )

    async def change(self, ref: ChatRef, knob: Knob, raw: str) -> str:
        limits = self._model.limits
        value = parse_value(knob, raw, limits)
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            params = with_value(self.params_of(chat), knob, value, limits)
            await repo.set_chat_values(session, chat.id, **{knob.name: params[knob.name]})
            await session.commit()
        return _("{flag} set to {value} for this chat.", flag=knob.flag, value=knob.format(value))

    async def clamp_all(self) -> list[str]:
        """Fit every chat's stored window knobs into the running model's limits (after a model
        switch); returns what changed, a line a chat."""
        changes: list[str] = []
        limits = self._model.limits
        defaults = self._settings.generation_defaults()
        async with self._sessions() as session:
            for chat in await repo.chats_with_window_settings(session):
                own = repo.stored_knobs(chat)
                stored = defaults.replace(**own)
                fitted, made = clamp_to_limits(stored, limits)
                if not made:
                    continue
                values = {
                    knob.name: fitted[knob.name] for knob in KNOBS
                    if knob.role == "window"
                    and (knob.name in own or fitted[knob.name] != stored[knob.name])
                }
                await repo.set_chat_values(session, chat.id, **values)
                changes.append(f"{chat.title or chat.id}: {', '.join(made)}")
            await session.commit()
        if defaults.n_ctx > limits.max_ctx:
            changes.append(_(
                "other chats: /ctx {configured} → {allowed} (the configured default is larger "
                "than this model allows)",
                configured=defaults.n_ctx, allowed=limits.max_ctx,
            ))
        return changes

    # -- /system, /reset, /settings -----------------------------------------------------------

    async def show_system(self, ref: ChatRef) -> str:
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            await session.commit()
        system = self.system_of(chat)
        if system is None:
            system = self._model.chat_format.default_system
        return _(
            "System prompt: {system}\n"
            "Change it with /system TEXT; /system default restores the default.",
            system=system or _(NO_SYSTEM),
        )

    async def set_system(self, ref: ChatRef, text: str) -> str:
        text = text.strip()
        if len(text) > MAX_SYSTEM_CHARS:
            raise InvalidParameter(_(
                "The system prompt is {length} characters; the limit is {limit}.",
                length=len(text), limit=MAX_SYSTEM_CHARS,
            ))
        value: str | None = None if text.lower() == "default" else text
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            await repo.set_chat_values(session, chat.id, system_prompt=value)
            await session.commit()
        if value is None:
            return _("System prompt restored to the default.")
        return _("System prompt set.")

    async def reset(self, ref: ChatRef) -> str:
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            left = await repo.reset_conversation(session, chat.id)
            await session.commit()
        return _n(
            "Started a fresh conversation ({n} earlier messages left the context window; they "
            "stay stored).",
            "Started a fresh conversation ({n} earlier messages left the context window; they "
            "stay stored).",
            left,
        )

    async def show_summary(self, ref: ChatRef) -> str:
        """/summary: the chat's summary of the messages that left its window."""
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            await session.commit()
        on = summary_on(chat)
        if not self._settings.summary_tokens:
            return _("Summaries are turned off on this bot (summary_tokens = 0).")
        if not chat.summary:
            if on:
                return _("No summary yet (summaries are on here): one is written when messages "
                         "leave the context window. /summary off|on changes it.")
            return _("No summary yet (summaries are off here): one is written when messages "
                     "leave the context window. /summary off|on changes it.")
        if on:
            return _("Summary of the messages that left the window (on; /summary off|on):\n"
                     "{summary}", summary=chat.summary)
        return _("Summary of the messages that left the window (off; /summary off|on):\n"
                 "{summary}", summary=chat.summary)

    async def set_summary(self, ref: ChatRef, raw: str) -> str:
        value = raw.strip().lower()
        if value not in ("on", "off"):
            raise InvalidParameter(_("Use /summary to see it, /summary on or /summary off."))
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            await repo.set_chat_values(session, chat.id, summary_on=value == "on")
            await session.commit()
        if value == "off":
            return _("Summaries off for this chat: messages that leave the window are forgotten.")
        return _("Summaries on for this chat: messages that leave the window are summarised.")
