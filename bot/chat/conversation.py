"""The conversation: accept a question (stored before anything else), answer it through the
running model into a reply sink, store the reply; /stop cancels a chat's replies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.chat_settings import ChatSettings, turn_of
from bot.chat.running import RunningModel
from bot.chat.sink import EMPTY_NOTE, STOP_NOTES, MessageRecorder, ReplySink
from bot.chat.summaries import Summaries, anchor
from bot.core.chats import ChatRef
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
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store import repository as repo
from bot.store.schema import ChatRow, TurnRow

log = logging.getLogger(__name__)

MODEL_FAILED = "⚠️ The model failed while answering; the error was logged. Try again."
STOPPED_EARLY = "⏹ stopped before it started."
QUESTION_GONE = "⏹ not answered: the message was deleted (/forget) before I got to it."


class TurnGone(LookupError):
    """The question to answer was deleted meanwhile (/forget)."""


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


@dataclass(frozen=True)
class _Prepared:
    reply_id: int
    window: Window
    request: GenerationRequest


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
            chat = await repo.get_or_create_chat(session, ref)
            turn = await repo.add_user_turn(
                session, chat.id, text, speaker=speaker, user_id=user_id,
                message_id=message_id, thread_id=thread_id,
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
                    await self._fail(accepted.turn_id, state="cancelled")
                    await sink.fail(STOPPED_EARLY)
                    return None
                async with self._model.serving():
                    return await self._reply(accepted, sink, cancel)
        finally:
            activity.tokens.discard(cancel)

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
        request = GenerationRequest(
            chat_key=str(accepted.chat_id),
            prompt=window.prompt,
            sampling=SamplingParams(
                n_predict=params.n_predict, seed=self._settings.seed, **params.sampling()
            ),
            stop=self._model.chat_format.stop,
            cancel=cancel,
            system=self._chat_settings.window_system(chat),
            turns=tuple(turns[window.first_turn:]),
        )
        return _Prepared(reply.id, window, request)

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
            await sink.fail(QUESTION_GONE)
            return None
        text = ""
        finished: Finished | None = None
        started = time.monotonic()
        first_text: float | None = None
        try:
            async for event in self._model.engine.generate(prepared.request):
                if isinstance(event, TextDelta):
                    if first_text is None:
                        first_text = time.monotonic() - started
                    text += event.text
                    await sink.update(text)
                elif isinstance(event, Queued):
                    await sink.waiting(event.ahead, stalled=event.stalled)
                elif isinstance(event, Restarted):
                    text = ""  # the next text replaces what was shown
                else:
                    finished = event
            if finished is None:
                raise RuntimeError("the engine ended a reply without Finished")
        except EngineBusy as exc:
            self._metrics.reply_failed()
            await self._fail(accepted.turn_id)
            await sink.fail(str(exc))
            return None
        except Exception:
            log.exception("reply to turn %d failed", accepted.turn_id)
            self._metrics.reply_failed()
            await self._fail(accepted.turn_id)
            await sink.fail(MODEL_FAILED)
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
        note = STOP_NOTES.get(finished.reason)
        if not final and finished.reason != "cancelled":
            note = EMPTY_NOTE
        ids = await sink.finish(final, note)
        async with self._sessions() as session:
            await repo.set_reply_messages(session, prepared.reply_id, ids, delivered=True)
            await session.commit()
        return ReplyOutcome(
            text=final, reason=finished.reason, n_tokens=finished.n_generated,
            window_tokens=prepared.window.n_tokens, dropped_turns=prepared.window.first_turn,
        )

    async def _fail(self, turn_id: int, *, state: str = "failed") -> None:
        async with self._sessions() as session:
            if state == "failed":
                await repo.fail_user_turn(session, turn_id)
            else:
                await repo.set_turn_values(session, turn_id, state=state)
            await session.commit()
