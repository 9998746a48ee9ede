"""The conversation: accept a question (stored before anything else), answer it through the
running model into a reply sink, store the reply; write the last reply again (a new sample, or
more of one that stopped at /n); /stop cancels a chat's replies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import i18n
from bot.chat.chat_settings import ChatSettings, turn_of
from bot.chat.running import RunningModel
from bot.chat.sink import EMPTY_NOTE, MessageRecorder, ReplySink, actions_after, stop_note
from bot.chat.summaries import Summaries, anchor
from bot.core.chats import ChatRef
from bot.core.params import GenerationParams
from bot.core.prompt import Turn
from bot.core.templates import TemplateError
from bot.core.window import Window
from bot.engine.base import (
    CancelToken,
    Finished,
    GenerationRequest,
    Queued,
    Restarted,
    SamplingParams,
    TextDelta,
)
from bot.errors import EngineBusy, InputTooLong, UserError
from bot.i18n import N_, _
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store import repository as repo
from bot.store.schema import ChatRow, TurnRow

log = logging.getLogger(__name__)

MODEL_FAILED = N_("⚠️ The model failed while answering; the error was logged. Try again.")
STOPPED_EARLY = N_("⏹ stopped before it started.")
QUESTION_GONE = N_("⏹ not answered: the message was deleted (/forget) before I got to it.")
NOT_LAST = N_("A newer message exists: only the last reply can be written again.")
NOT_REDONE = N_("⚠️ Not written again: {reason}")
"""The messages above are in English; shown translated (`_(MODEL_FAILED)`)."""

Redo = Literal["regenerate", "continue"]
"""A finished reply written again: a new sample in its place, or more of it (it stopped at /n)."""


class TurnGone(LookupError):
    """The question to answer was deleted meanwhile (/forget)."""


class RedoRefused(Exception):
    """The reply cannot be written again (no longer the last, or its prompt does not fit);
    `reason` is in the current language."""

    def __init__(self, reason: str, previous: _Previous | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.previous = previous


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
    by_turn: dict[int, CancelToken] = field(default_factory=dict)
    """The token of the reply to each question being answered or waiting (its Stop button)."""


@dataclass(frozen=True)
class _Previous:
    """A stored reply being written again: what it was, to keep if the new one fails."""

    text: str
    reason: str
    n_tokens: int

    @property
    def note(self) -> str | None:
        """Its note, in the current language."""
        return stop_note(self.reason)


@dataclass(frozen=True)
class _Prepared:
    reply_id: int
    window: Window
    request: GenerationRequest
    previous: _Previous | None = None
    prefix: str = ""
    """The text the reply continues (Continue), shown before the new text."""


class Conversation:
    """Questions in, replies out, one reply at a time per chat."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        model: RunningModel,
        chat_settings: ChatSettings,
        metrics: Metrics | None = None,
        summaries: Summaries | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._model = model
        self._chat_settings = chat_settings
        self._metrics = metrics or Metrics()
        self._summaries = summaries
        self._activity: defaultdict[int, _ChatActivity] = defaultdict(_ChatActivity)

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
        """Store a question before anything else happens to it, with the language its asker
        is answered in (the current one: a reply written after a restart speaks it)."""
        text = text.strip()
        if not text:
            raise UserError(_("Send some text after the command, e.g. /ask What is a llama?"))
        limit = self._settings.max_input_chars
        if len(text) > limit:
            raise InputTooLong(_(
                "Your message is {length} characters; the limit is {limit}. "
                "Send a shorter message or split it.",
                length=len(text), limit=limit,
            ))
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            turn = await repo.add_user_turn(
                session, chat.id, text, speaker=speaker, user_id=user_id,
                message_id=message_id, thread_id=thread_id, language=i18n.current(),
            )
            await session.commit()
        return Accepted(chat.id, turn.id)

    async def conversation_id(self, ref: ChatRef) -> int:
        """The id of the conversation `ref` names (a forum topic's row, else the chat's)."""
        if ref.thread_id is None:
            return ref.chat_id
        async with self._sessions() as session:
            chat = await repo.get_or_create_chat(session, ref)
            await session.commit()
            return chat.id

    def recorder(self, accepted: Accepted) -> MessageRecorder:
        """What a sink calls with the message ids of the reply to `accepted` as they grow."""

        async def record(ids: Sequence[int]) -> None:
            async with self._sessions() as session:
                await repo.set_question_reply_messages(session, accepted.turn_id, ids)
                await session.commit()

        return record

    async def answer(
        self, accepted: Accepted, sink: ReplySink, *, redo: Redo | None = None
    ) -> ReplyOutcome | None:
        """Produce, stream and store the reply to a stored question.

        Replies in one chat are produced in order; /stop cancels the running one and any
        waiting. Returns None when the question was cancelled before it started or failed
        (the user has been told through the sink). With `redo`, the question's stored reply
        (the chat's last turn) is written again into the sink showing it: replaced by a new
        sample, or continued; it stays as it was if that fails or is stopped before new text.
        """
        activity = self._activity[accepted.chat_id]
        cancel = CancelToken()
        activity.tokens.add(cancel)
        activity.by_turn[accepted.turn_id] = cancel
        try:
            async with activity.lock:
                if cancel.cancelled and redo is None:
                    await self._fail(accepted.turn_id, state="cancelled")
                    await sink.fail(_(STOPPED_EARLY))
                    return None
                async with self._model.serving():
                    if redo is not None:
                        return await self._redo(accepted, sink, cancel, redo)
                    return await self._reply(accepted, sink, cancel)
        finally:
            self._written(accepted, cancel)

    def stop_turn(self, chat_id: int, turn_id: int) -> bool:
        """Cancel the reply to one question (its Stop button); False if none is in progress."""
        token = self._activity[chat_id].by_turn.get(turn_id)
        if token is None or token.cancelled:
            return False
        token.cancel()
        return True

    def busy(self, chat_id: int) -> bool:
        """Whether a reply of this chat is being written or waits to be."""
        return bool(self._activity[chat_id].tokens)

    def stop(self, chat_id: int) -> int:
        """Cancel the running and waiting replies of a chat; returns how many."""
        tokens = list(self._activity[chat_id].tokens)
        for token in tokens:
            token.cancel()
        return len(tokens)

    @asynccontextmanager
    async def quiet(self, chat_id: int) -> AsyncIterator[None]:
        """Stop the chat's replies and hold the chat: none runs or starts until the block ends."""
        self.stop(chat_id)
        async with self._activity[chat_id].lock:
            yield

    async def _prepare(self, accepted: Accepted, cancel: CancelToken) -> _Prepared:
        """Build the window and start the reply row (raises InputTooLong, question failed)."""
        async with self._sessions() as session:
            chat = await session.get(ChatRow, accepted.chat_id)
            question = await session.get(TurnRow, accepted.turn_id)
            if chat is None or question is None:
                raise TurnGone(f"turn {accepted.turn_id} of chat {accepted.chat_id} is gone")
            rows = await repo.conversation(session, chat, up_to=accepted.turn_id)
            params = self._chat_settings.params_of(chat)
            try:
                turns = [turn_of(r) for r in rows]
                window = await self._chat_settings.window_of(chat, params, turns)
            except InputTooLong:
                await repo.fail_user_turn(session, accepted.turn_id)
                await session.commit()
                raise
            if window.first_turn and self._summaries is not None:
                self._summaries.left_window(chat.id, anchor(rows[window.first_turn]))
            reply = await repo.start_reply(session, question)
            await session.commit()
        request = self._request(accepted, chat, params, window, turns, cancel)
        return _Prepared(reply.id, window, request)

    def _request(
        self, accepted: Accepted, chat: ChatRow, params: GenerationParams, window: Window,
        turns: list[Turn], cancel: CancelToken, *, seed: int | None = None,
    ) -> GenerationRequest:
        return GenerationRequest(
            chat_key=str(accepted.chat_id),
            prompt=window.prompt,
            sampling=SamplingParams(
                n_predict=params.n_predict,
                seed=self._settings.seed if seed is None else seed,
                **params.sampling(),
            ),
            stop=self._model.chat_format.stop,
            cancel=cancel,
            system=self._chat_settings.window_system(chat),
            turns=tuple(turns[window.first_turn:]),
        )

    async def _prepare_redo(
        self, accepted: Accepted, cancel: CancelToken, redo: Redo
    ) -> _Prepared:
        """The window of a stored reply written again: the conversation before it, and for
        Continue the reply itself as an unfinished turn. The stored reply is kept (marked
        undelivered, so a restart shows it again) until the new text replaces it."""
        async with self._sessions() as session:
            chat = await session.get(ChatRow, accepted.chat_id)
            question = await session.get(TurnRow, accepted.turn_id)
            if chat is None or question is None:
                raise TurnGone(f"turn {accepted.turn_id} of chat {accepted.chat_id} is gone")
            reply = await repo.reply_for(session, question.id)
            if reply is None or reply.state != "complete":
                raise RedoRefused(_(NOT_LAST))
            previous = _Previous(reply.text, reply.stop_reason or "eos", reply.n_tokens or 0)
            rows = await repo.conversation(session, chat)
            if not rows or rows[-1].id != reply.id:
                raise RedoRefused(_(NOT_LAST), previous)
            params = self._chat_settings.params_of(chat)
            turns = [turn_of(r) for r in rows[:-1]]
            if redo == "continue":
                turns.append(Turn("assistant", reply.text, unfinished=True))
            try:
                window = await self._chat_settings.window_of(chat, params, turns)
            except InputTooLong:
                raise RedoRefused(
                    _("it no longer fits the context window (/ctx minus /n)."), previous
                ) from None
            except TemplateError:
                raise RedoRefused(_("the model's chat template cannot continue a reply."),
                                  previous) from None
            if window.first_turn and self._summaries is not None:
                self._summaries.left_window(chat.id, anchor(rows[window.first_turn]))
            reply.delivered = False
            await session.commit()
        # A new sample even where the operator fixed the seed (it would write the same reply).
        seed = -1 if redo == "regenerate" else None
        request = self._request(accepted, chat, params, window, turns, cancel, seed=seed)
        prefix = previous.text if redo == "continue" else ""
        return _Prepared(reply.id, window, request, previous, prefix)

    async def _reply(
        self, accepted: Accepted, sink: ReplySink, cancel: CancelToken
    ) -> ReplyOutcome | None:
        try:
            prepared = await self._prepare(accepted, cancel)
        except InputTooLong as exc:
            await sink.fail(str(exc))
            return None
        except TurnGone:
            log.info("turn %d of chat %d was deleted before its answer", accepted.turn_id,
                     accepted.chat_id)
            await sink.fail(_(QUESTION_GONE))
            return None
        try:
            finished, first_text = await self._stream(accepted, prepared, sink)
        except EngineBusy as exc:
            self._metrics.reply_failed()
            await self._fail(accepted.turn_id)
            await sink.fail(str(exc))
            return None
        except Exception:
            log.exception("reply to turn %d failed", accepted.turn_id)
            self._metrics.reply_failed()
            await self._fail(accepted.turn_id)
            await sink.fail(_(MODEL_FAILED))
            return None
        self._metrics.reply_finished(finished, first_text)
        final = finished.text.strip()
        async with self._sessions() as session:
            reply_row = await session.get(TurnRow, prepared.reply_id)
            assert reply_row is not None
            await repo.finish_reply(
                session, reply_row, final, reason=finished.reason, n_tokens=finished.n_generated
            )
            await session.commit()
        note = stop_note(finished.reason)
        if not final and finished.reason != "cancelled":
            note = _(EMPTY_NOTE)
        ids = await sink.finish(final, note, actions=actions_after(final, finished.reason))
        async with self._sessions() as session:
            await repo.set_reply_messages(session, prepared.reply_id, ids, delivered=True)
            await session.commit()
        return ReplyOutcome(
            text=final, reason=finished.reason, n_tokens=finished.n_generated,
            window_tokens=prepared.window.n_tokens, dropped_turns=prepared.window.first_turn,
        )

    async def _stream(
        self, accepted: Accepted, prepared: _Prepared, sink: ReplySink
    ) -> tuple[Finished, float | None]:
        """Run the engine into the sink; returns how it ended and the seconds to first text."""
        text = prepared.prefix
        finished: Finished | None = None
        started = time.monotonic()
        first_text: float | None = None
        async for event in self._model.engine.generate(prepared.request):
            if isinstance(event, TextDelta):
                if first_text is None:
                    first_text = time.monotonic() - started
                text += event.text
                await sink.update(text)
            elif isinstance(event, Queued):
                await sink.waiting(event.ahead, stalled=event.stalled)
            elif isinstance(event, Restarted):
                text = prepared.prefix  # the next text replaces what was shown
            else:
                finished = event
        if finished is None:
            raise RuntimeError("the engine ended a reply without Finished")
        # Written: what is left is storing and showing it, which /stop cannot stop and which
        # must not make a press of the reply's buttons (once it shows) find the chat busy.
        self._written(accepted, prepared.request.cancel)
        # The whole text is there: a sink holding its first message back sends it whole.
        await sink.update(text, complete=True)
        return finished, first_text

    def _written(self, accepted: Accepted, cancel: CancelToken) -> None:
        """The reply is no longer written: the chat's activity forgets its token."""
        activity = self._activity[accepted.chat_id]
        activity.tokens.discard(cancel)
        if activity.by_turn.get(accepted.turn_id) is cancel:
            del activity.by_turn[accepted.turn_id]

    async def _redo(
        self, accepted: Accepted, sink: ReplySink, cancel: CancelToken, redo: Redo
    ) -> ReplyOutcome | None:
        try:
            prepared = await self._prepare_redo(accepted, cancel, redo)
        except TurnGone:
            await sink.fail(_(QUESTION_GONE))
            return None
        except RedoRefused as exc:
            if exc.previous is None:
                await sink.fail(exc.reason)
            else:  # shown as it was, its buttons gone with the chance to redo it
                await sink.finish(exc.previous.text, exc.previous.note)
            return None
        previous = prepared.previous
        assert previous is not None
        try:
            finished, first_text = await self._stream(accepted, prepared, sink)
        except Exception as exc:
            if not isinstance(exc, EngineBusy):
                log.exception("writing the reply to turn %d again failed", accepted.turn_id)
            self._metrics.reply_failed()
            reason = str(exc) if isinstance(exc, EngineBusy) else _(MODEL_FAILED)
            await self._keep(prepared, sink, _(NOT_REDONE, reason=reason))
            return None
        self._metrics.reply_finished(finished, first_text)
        if finished.reason == "cancelled" and not finished.text.strip():
            await self._keep(prepared, sink, previous.note)  # stopped before a new word
            return None
        final = (prepared.prefix + finished.text).strip()
        n_tokens = finished.n_generated + (previous.n_tokens if prepared.prefix else 0)
        async with self._sessions() as session:
            reply_row = await session.get(TurnRow, prepared.reply_id)
            if reply_row is None:  # forgotten meanwhile
                await sink.fail(_(QUESTION_GONE))
                return None
            await repo.finish_reply(
                session, reply_row, final, reason=finished.reason, n_tokens=n_tokens
            )
            await session.commit()
        note = stop_note(finished.reason) if final else _(EMPTY_NOTE)
        ids = await sink.finish(final, note, actions=actions_after(final, finished.reason))
        async with self._sessions() as session:
            await repo.set_reply_messages(session, prepared.reply_id, ids, delivered=True)
            await session.commit()
        return ReplyOutcome(
            text=final, reason=finished.reason, n_tokens=n_tokens,
            window_tokens=prepared.window.n_tokens, dropped_turns=prepared.window.first_turn,
        )

    async def _keep(self, prepared: _Prepared, sink: ReplySink, note: str | None) -> None:
        """Show the stored reply again as it was (the redo failed or was stopped at once)."""
        previous = prepared.previous
        assert previous is not None
        ids = await sink.finish(previous.text, note,
                                actions=actions_after(previous.text, previous.reason))
        async with self._sessions() as session:
            await repo.set_reply_messages(session, prepared.reply_id, ids, delivered=True)
            await session.commit()

    async def _fail(self, turn_id: int, *, state: str = "failed") -> None:
        async with self._sessions() as session:
            if state == "failed":
                await repo.fail_user_turn(session, turn_id)
            else:
                await repo.set_turn_values(session, turn_id, state=state)
            await session.commit()
