"""The chat service: what every front end (Telegram, console) does with a chat.

It stores each message before the model sees it, builds the window, streams the reply into a
`ReplySink` and stores the result; it owns the per-chat settings commands. It knows neither
Telegram nor llama.cpp: the engine and the sink are handed to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.params import (
    BY_COMMAND,
    SPECS,
    GenerationParams,
    ParamLimits,
    clamp_to_limits,
    format_value,
    parse_value,
    with_value,
)
from bot.core.prompt import Turn
from bot.core.templates import ChatFormat, choose_format
from bot.core.window import Window, fit_window
from bot.engine.base import (
    CancelToken,
    Engine,
    Finished,
    GenerationRequest,
    Queued,
    SamplingParams,
    TextDelta,
)
from bot.errors import InputTooLong, InvalidParameter, UserError
from bot.settings import Settings
from bot.store import repository as repo
from bot.store.repository import ChatRef
from bot.store.schema import ChatRow, TurnRow

log = logging.getLogger(__name__)

MAX_SYSTEM_CHARS = 4000
NO_SYSTEM = "(none set: the chat template's own default applies)"


class ReplySink(Protocol):
    """Where a reply goes while it is written: a Telegram message being edited, a terminal."""

    on_messages: Callable[[Sequence[int]], Awaitable[None]] | None

    async def waiting(self, ahead: int) -> None:
        """The reply has not started: `ahead` requests go first. Must return quickly."""
        ...

    async def update(self, text: str) -> None:
        """The reply so far (the whole text, not a delta). Must return quickly."""
        ...

    async def finish(self, text: str, note: str | None = None) -> Sequence[int]:
        """Show the final text (and a note such as "stopped"); return the message ids used."""
        ...

    async def fail(self, message: str) -> None:
        """The reply could not be produced; tell the user."""
        ...


@dataclass(frozen=True)
class Accepted:
    """A stored question waiting for its answer."""

    chat_id: int
    turn_id: int


@dataclass(frozen=True)
class ReplyOutcome:
    text: str
    reason: str
    n_tokens: int
    window_tokens: int
    dropped_turns: int


@dataclass
class _ChatActivity:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tokens: set[CancelToken] = field(default_factory=set)


STOP_NOTES = {
    "cancelled": "⏹ stopped",
    "length": None,
    "context": "(the context window is full: /reset starts a fresh conversation)",
}


class ChatService:
    """Chat operations shared by the Telegram bot and the console."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        engine: Engine,
        chat_format: ChatFormat | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._engine = engine
        self._fixed_format = chat_format
        self.chat_format = chat_format or self._format_for(engine)
        self._activity: defaultdict[int, _ChatActivity] = defaultdict(_ChatActivity)
        # Replies in progress, and a model switch waiting for them to finish.
        self._running = 0
        self._switching = False
        self._idle = asyncio.Condition()

    def _format_for(self, engine: Engine) -> ChatFormat:
        template = self._settings.template
        info = engine.info
        return choose_format(
            template if template in ("auto", "alpaca", "gguf") else _read_text(template),
            model_template=info.chat_template,
            bos_token=info.bos_token,
            eos_token=info.eos_token,
        )

    # -- limits and settings -------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def limits(self) -> ParamLimits:
        info = self._engine.info
        return ParamLimits(max_ctx=min(self._settings.max_ctx, info.n_ctx_train, info.n_ctx))

    def _params(self, chat: ChatRow) -> GenerationParams:
        defaults = self._settings.generation_defaults()
        values: dict[str, Any] = {
            name: getattr(chat, name) if getattr(chat, name) is not None else getattr(defaults, name)
            for name in repo.SETTING_COLUMNS
        }
        params, _ = clamp_to_limits(GenerationParams(**values), self.limits)
        return params

    def _system(self, chat: ChatRow) -> str | None:
        if chat.system_prompt is not None:
            return chat.system_prompt
        return self._settings.system_prompt

    async def params(self, ref: ChatRef) -> GenerationParams:
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            await session.commit()
            return self._params(chat)

    async def show_param(self, ref: ChatRef, command: str) -> str:
        spec = BY_COMMAND[command]
        params = await self.params(ref)
        value = getattr(params, spec.name)
        default = getattr(self._settings.generation_defaults(), spec.name)
        return (
            f"{spec.flag} {format_value(spec, value)} — {spec.help}. "
            f"Range {spec.range_text(self.limits.maximum(spec))}, default "
            f"{format_value(spec, default)}. Change it with /{spec.command} VALUE."
        )

    async def set_param(self, ref: ChatRef, command: str, raw: str) -> str:
        spec = BY_COMMAND[command]
        limits = self.limits
        value = parse_value(spec, raw, limits)
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            params = with_value(self._params(chat), spec, value, limits)
            await repo.set_chat_values(session, chat.id, **{spec.name: getattr(params, spec.name)})
            await session.commit()
        return f"{spec.flag} set to {format_value(spec, value)} for this chat."

    async def show_system(self, ref: ChatRef) -> str:
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            await session.commit()
        system = self._system(chat)
        if system is None:
            system = self.chat_format.default_system
        shown = system if system else NO_SYSTEM
        return (
            f"System prompt: {shown}\n"
            "Change it with /system TEXT; /system default restores the default."
        )

    async def set_system(self, ref: ChatRef, text: str) -> str:
        text = text.strip()
        if len(text) > MAX_SYSTEM_CHARS:
            raise InvalidParameter(
                f"The system prompt is {len(text)} characters; the limit is {MAX_SYSTEM_CHARS}."
            )
        value: str | None = None if text.lower() == "default" else text
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            await repo.set_chat_values(session, chat.id, system_prompt=value)
            await session.commit()
        return "System prompt restored to the default." if value is None else "System prompt set."

    async def reset(self, ref: ChatRef) -> str:
        async with self._sessions() as session:
            await repo.get_or_create_chat(session, ref)
            left = await repo.reset_conversation(session, ref.chat_id)
            await session.commit()
        return (
            f"Started a fresh conversation ({left} earlier messages left the context window; "
            "they stay stored)."
        )

    async def settings_text(self, ref: ChatRef) -> str:
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            turns = await repo.conversation(session, chat)
            await session.commit()
        params = self._params(chat)
        used, dropped = self._context_use(chat, params, turns)
        info = self._engine.info
        lines = [f"Model: {info.name} ({info.path.name}), chat format: {self.chat_format.name}"]
        for spec in SPECS.values():
            value = format_value(spec, getattr(params, spec.name))
            lines.append(f"/{spec.command} ({spec.flag}) = {value}")
        system = self._system(chat)
        if system is None:
            system = self.chat_format.default_system or NO_SYSTEM
        lines.append(f"/system = {_shorten(system, 200)}")
        report = getattr(self._engine, "memory_report", None)
        if report is not None:
            lines.append(f"Memory: {report().summary()}")
        lines.append(
            f"Context: {used}/{params.n_ctx} tokens "
            f"({len(turns) - dropped} of {len(turns)} messages in the window, "
            f"{params.n_predict} reserved for the reply)"
        )
        return "\n".join(lines)

    def _context_use(
        self, chat: ChatRow, params: GenerationParams, rows: list[TurnRow]
    ) -> tuple[int, int]:
        turns = [_turn(row) for row in rows]
        if any(turn.role == "user" for turn in turns):
            try:
                window = self._window(chat, params, turns)
                return window.n_tokens, window.first_turn
            except InputTooLong:
                return params.prompt_budget, len(turns)
        return self._engine.count_tokens(self.chat_format.render(self._system(chat), [])), 0

    def _window(self, chat: ChatRow, params: GenerationParams, turns: list[Turn]) -> Window:
        return fit_window(
            self.chat_format,
            self._system(chat),
            turns,
            budget=params.prompt_budget,
            count_tokens=self._engine.count_tokens,
        )

    # -- conversation ----------------------------------------------------------------------

    async def accept(
        self,
        ref: ChatRef,
        text: str,
        *,
        speaker: str | None = None,
        user_id: int | None = None,
        message_id: int | None = None,
        thread_id: int | None = None,
    ) -> Accepted:
        """Store a question before anything else happens to it."""
        text = text.strip()
        if not text:
            raise UserError("Send some text after the command, e.g. /ask What is a llama?")
        limit = self._settings.max_input_chars
        if len(text) > limit:
            raise InputTooLong(
                f"Your message is {len(text)} characters; the limit is {limit}. "
                "Send a shorter message or split it."
            )
        async with self._sessions() as session:
            await repo.get_or_create_chat(session, ref)
            turn = await repo.add_user_turn(
                session, ref.chat_id, text, speaker=speaker, user_id=user_id,
                message_id=message_id, thread_id=thread_id,
            )
            await session.commit()
        return Accepted(ref.chat_id, turn.id)

    async def answer(self, accepted: Accepted, sink: ReplySink) -> ReplyOutcome | None:
        """Produce, stream and store the reply to a stored question.

        Replies in one chat are produced in order; /stop cancels the running one and any
        waiting. Returns None when the question was cancelled before it started or failed
        (the user has been told through the sink).
        """
        activity = self._activity[accepted.chat_id]
        cancel = CancelToken()
        activity.tokens.add(cancel)
        try:
            async with activity.lock:
                if cancel.cancelled:
                    await self._mark(accepted.turn_id, "cancelled")
                    await sink.fail("⏹ stopped before it started.")
                    return None
                async with self._idle:
                    await self._idle.wait_for(lambda: not self._switching)
                    self._running += 1
                try:
                    return await self._generate(accepted, sink, cancel)
                finally:
                    async with self._idle:
                        self._running -= 1
                        self._idle.notify_all()
        finally:
            activity.tokens.discard(cancel)

    async def switch_engine(
        self, load: Callable[[Path], Engine], model: Path
    ) -> list[str]:
        """Replace the model without a restart; returns the settings changes it forced.

        Replies in progress finish first and new ones wait. The old model is freed before the
        new one loads (a home server rarely has memory for two); if the new one fails to load,
        the old one is loaded again and the error raised.
        """
        async with self._idle:
            self._switching = True
            await self._idle.wait_for(lambda: self._running == 0)
        try:
            old_path = self._engine.info.path
            await self._engine.aclose()
            try:
                self._engine = await asyncio.to_thread(load, model)
            except Exception:
                self._engine = await asyncio.to_thread(load, old_path)
                raise
            self.chat_format = self._fixed_format or self._format_for(self._engine)
            return await self._clamp_chats()
        finally:
            async with self._idle:
                self._switching = False
                self._idle.notify_all()

    async def _clamp_chats(self) -> list[str]:
        """Fit every chat's stored /ctx and /n into the new model's limits."""
        changes: list[str] = []
        limits = self.limits
        async with self._sessions() as session:
            for chat in await repo.chats_with_window_settings(session):
                stored = GenerationParams(
                    n_ctx=chat.n_ctx or self._settings.ctx,
                    n_predict=chat.n_predict or self._settings.n_predict,
                )
                fitted, made = clamp_to_limits(stored, limits)
                if made:
                    values: dict[str, Any] = {}
                    if chat.n_ctx is not None:
                        values["n_ctx"] = fitted.n_ctx
                    if chat.n_predict is not None or fitted.n_predict != stored.n_predict:
                        values["n_predict"] = fitted.n_predict
                    await repo.set_chat_values(session, chat.id, **values)
                    name = chat.title or str(chat.id)
                    changes.append(f"{name}: {', '.join(made)}")
            await session.commit()
        if self._settings.ctx > limits.max_ctx:
            changes.append(
                f"other chats: /ctx {self._settings.ctx} → {limits.max_ctx} (the configured default "
                "is larger than this model allows)"
            )
        return changes

    def stop(self, chat_id: int) -> int:
        """Cancel the running and waiting replies of a chat; returns how many."""
        tokens = list(self._activity[chat_id].tokens)
        for token in tokens:
            token.cancel()
        return len(tokens)

    async def _generate(
        self, accepted: Accepted, sink: ReplySink, cancel: CancelToken
    ) -> ReplyOutcome | None:
        async with self._sessions() as session:
            chat = await session.get(ChatRow, accepted.chat_id)
            question = await session.get(TurnRow, accepted.turn_id)
            if chat is None or question is None:
                raise LookupError(f"turn {accepted.turn_id} of chat {accepted.chat_id} is gone")
            rows = await repo.conversation(session, chat, up_to=accepted.turn_id)
            params = self._params(chat)
            turns = [_turn(row) for row in rows]
            try:
                window = self._window(chat, params, turns)
            except InputTooLong as exc:
                await repo.fail_user_turn(session, accepted.turn_id)
                await session.commit()
                await sink.fail(str(exc))
                return None
            reply = await repo.start_reply(session, question)
            await session.commit()
            reply_id = reply.id

        async def remember(ids: Sequence[int]) -> None:
            async with self._sessions() as session:
                await repo.set_turn_values(
                    session, reply_id, message_id=ids[0] if ids else None,
                    message_ids=",".join(str(i) for i in ids),
                )
                await session.commit()

        sink.on_messages = remember
        request = GenerationRequest(
            chat_key=str(accepted.chat_id),
            prompt=window.prompt,
            sampling=SamplingParams(
                temp=params.temp, top_k=params.top_k, top_p=params.top_p,
                repeat_penalty=params.repeat_penalty, n_predict=params.n_predict,
                seed=self._settings.seed,
            ),
            stop=self.chat_format.stop,
            cancel=cancel,
        )
        text = ""
        finished: Finished | None = None
        try:
            async for event in self._engine.generate(request):
                if isinstance(event, TextDelta):
                    text += event.text
                    await sink.update(text)
                elif isinstance(event, Queued):
                    await sink.waiting(event.ahead)
                else:
                    finished = event
        except UserError as exc:  # the queue is full
            await self._mark(accepted.turn_id, "failed")
            await sink.fail(str(exc))
            return None
        except Exception:
            log.exception("reply to turn %d failed", accepted.turn_id)
            await self._mark(accepted.turn_id, "failed")
            await sink.fail("⚠️ The model failed while answering; the error was logged. Try again.")
            return None
        assert finished is not None
        final = finished.text.strip()
        async with self._sessions() as session:
            reply_row = await session.get(TurnRow, reply_id)
            assert reply_row is not None
            await repo.finish_reply(
                session, reply_row, final, reason=finished.reason, n_tokens=finished.n_generated
            )
            await session.commit()
        note = STOP_NOTES.get(finished.reason)
        if not final and finished.reason != "cancelled":
            note = "(the model gave an empty answer)"
        ids = await sink.finish(final, note)
        async with self._sessions() as session:
            await repo.set_turn_values(
                session, reply_id, delivered=True,
                **({"message_id": ids[0], "message_ids": ",".join(map(str, ids))} if ids else {}),
            )
            await session.commit()
        return ReplyOutcome(
            text=final, reason=finished.reason, n_tokens=finished.n_generated,
            window_tokens=window.n_tokens, dropped_turns=window.first_turn,
        )

    async def _mark(self, turn_id: int, state: str) -> None:
        async with self._sessions() as session:
            if state == "failed":
                await repo.fail_user_turn(session, turn_id)
            else:
                await repo.set_turn_values(session, turn_id, state=state)
            await session.commit()

    # -- recovery after a crash or restart -------------------------------------------------

    async def unfinished(self) -> list[RecoveryItem]:
        """Questions never answered and replies never delivered, oldest first."""
        items: list[RecoveryItem] = []
        async with self._sessions() as session:
            for question in await repo.unfinished_questions(session):
                reply = await repo.reply_for(session, question.id)
                chat = await session.get(ChatRow, question.chat_id)
                items.append(RecoveryItem(question, reply, chat.kind if chat else "private"))
            for reply in await repo.undelivered_replies(session):
                chat = await session.get(ChatRow, reply.chat_id)
                asked = await session.get(TurnRow, reply.reply_to) if reply.reply_to else None
                if asked is not None:
                    items.append(RecoveryItem(asked, reply, chat.kind if chat else "private"))
        return items

    async def deliver_stored(self, item: RecoveryItem, sink: ReplySink) -> None:
        """Finish delivering a reply that was stored complete before a crash."""
        assert item.reply is not None
        ids = await sink.finish(item.reply.text, STOP_NOTES.get(item.reply.stop_reason or ""))
        async with self._sessions() as session:
            await repo.set_turn_values(
                session, item.reply.id, delivered=True,
                **({"message_ids": ",".join(map(str, ids))} if ids else {}),
            )
            await session.commit()


@dataclass(frozen=True)
class RecoveryItem:
    """Work a crash interrupted: a question to answer again, or a reply to deliver."""

    question: TurnRow
    reply: TurnRow | None
    chat_kind: str

    @property
    def needs_generation(self) -> bool:
        return self.question.state == "pending"

    @property
    def message_ids(self) -> list[int]:
        if self.reply is None or not self.reply.message_ids:
            return []
        return [int(part) for part in self.reply.message_ids.split(",") if part]


def _turn(row: TurnRow) -> Turn:
    if row.role == "user":
        return Turn("user", row.text, row.speaker)
    return Turn("assistant", row.text)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()
