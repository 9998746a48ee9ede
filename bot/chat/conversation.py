"""The conversation: accept a question (stored before anything else), write its reply through
the running model into a reply sink, one reply at a time per chat, and store it."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import i18n
from bot.chat.activity import ChatActivity
from bot.chat.chat_settings import ChatSettings
from bot.chat.demo_notice import DemoModelNotice
from bot.chat.preparation import Prepared, ReplyPreparation
from bot.chat.running import RunningModel
from bot.chat.sink import EMPTY_NOTE, MessageRecorder, ReplySink, actions_after, stop_note
from bot.core.chats import ChatRef
from bot.engine.base import (
    CancelToken,
    Finished,
    Queued,
    Restarted,
    TextDelta,
)
from bot.errors import EngineBusy, InputTooLong, UserError
from bot.i18n import N_, _
from bot.metrics import Metrics
from bot.reading.context import ContextItem, encode_context
from bot.settings import Settings
from bot.store import repository as repo
from bot.store import usage
from bot.store.schema import ChatRow, TurnRow

log = logging.getLogger(__name__)

MODEL_FAILED = N_("⚠️ The model failed while answering; the error was logged. Try again.")
STOPPED_EARLY = N_("⏹ stopped before it started.")
QUESTION_GONE = N_("⏹ not answered: the message was deleted (/forget) before I got to it.")
"""The messages above are in English; shown translated (`_(MODEL_FAILED)`)."""


class TurnGone(LookupError):
    """The question to answer was deleted meanwhile (/forget)."""


@dataclass(frozen=True)
class Accepted:
    """A stored question waiting for its answer."""

    chat_id: int
    turn_id: int
    asker: int | None = None
    """Who asked (a Telegram user id): their /stop stops this reply."""


@dataclass(frozen=True)
class ReplyOutcome:
    text: str
    reason: str
    n_tokens: int
    window_tokens: int
    left_out: bool
    """Older turns of the conversation were left out of the reply's window."""


class Conversation:
    """Questions in, replies out, one reply at a time per chat."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        model: RunningModel,
        chat_settings: ChatSettings,
        preparation: ReplyPreparation,
        activity: ChatActivity,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings, self._sessions, self._model = settings, sessions, model
        self._chat_settings, self._preparation = chat_settings, preparation
        self._activity, self._metrics = activity, metrics or Metrics()
        self._demo_notice = DemoModelNotice(lambda: model.engine.info.path)

    async def accept(
        self,
        ref: ChatRef,
        text: str,
        *,
        speaker: str | None = None,
        user_id: int | None = None,
        message_id: int | None = None,
        thread_id: int | None = None,
        context: Sequence[ContextItem] = (),
        heard_from: str | None = None,
        heard_seconds: float | None = None,
    ) -> Accepted:
        """Store a question before anything else happens to it, with the language its asker
        is answered in (the current one: a reply written after a restart speaks it) and what
        it brings along (`context`: then its own text may be empty, a picture sent alone).
        A question heard rather than typed (its text the transcript) says what from
        (`heard_from`: voice, audio, video_note, file) and how long that audio was."""
        text = text.strip()
        if not text and not context:
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
                context=encode_context(context),
            )
            turn.heard_from, turn.heard_seconds = heard_from, heard_seconds
            await session.commit()
        return Accepted(chat.id, turn.id, user_id)

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

    async def write_reply(self, accepted: Accepted, sink: ReplySink) -> ReplyOutcome | None:
        """Produce, stream and store the reply to a stored question.

        Replies in one chat are produced in order; /stop cancels the running one and any
        waiting. Returns None when the question was cancelled before it started or failed
        (the user has been told through the sink).
        """
        async with self._activity.writing(accepted.chat_id, accepted.turn_id, accepted.asker,
                                          early_stop=True) as cancel:
            if cancel.cancelled:
                await self._fail(accepted.turn_id, state="cancelled")
                await sink.fail(_(STOPPED_EARLY))
                return None
            async with self._model.serving():
                return await self._reply(accepted, sink, cancel)

    async def prepare(self, accepted: Accepted, cancel: CancelToken) -> Prepared:
        """Build the window and start the reply row (raises InputTooLong, question failed)."""
        async with self._sessions() as session:
            chat = await session.get(ChatRow, accepted.chat_id)
            question = await session.get(TurnRow, accepted.turn_id)
            if chat is None or question is None:
                raise TurnGone(f"turn {accepted.turn_id} of chat {accepted.chat_id} is gone")
            params = self._chat_settings.params_of(chat)
            try:
                window, _kept = await self._preparation.fit(session, chat, params,
                                                            up_to=accepted.turn_id)
            except InputTooLong:
                await repo.fail_user_turn(session, accepted.turn_id)
                await session.commit()
                raise
            reply = await repo.start_reply(session, question)
            await session.commit()
        request = self._preparation.request(chat, params, window, cancel)
        return Prepared(reply.id, window, request, show_thinking=params.reasoning == "show")

    async def _reply(
        self, accepted: Accepted, sink: ReplySink, cancel: CancelToken
    ) -> ReplyOutcome | None:
        try:
            prepared = await self.prepare(accepted, cancel)
        except InputTooLong as exc:
            await sink.fail(str(exc))
            return None
        except TurnGone:
            log.info("turn %d of chat %d was deleted before its answer", accepted.turn_id,
                     accepted.chat_id)
            await sink.fail(_(QUESTION_GONE))
            return None
        try:
            finished, first_text = await self.stream(accepted, prepared, sink)
        except EngineBusy as exc:
            self._metrics.reply_failed()
            self._metrics.message_refused("busy")
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
        note = stop_note(finished.reason)
        if not finished.text.strip() and finished.reason != "cancelled":
            note = _(EMPTY_NOTE)
        question = prepared.window.turns[-1].text if prepared.window.turns else ""
        note = self._demo_notice.note(accepted.chat_id, question, note)
        return await self.finish(prepared, sink, finished.text, reason=finished.reason,
                                 n_tokens=finished.n_generated, note=note,
                                 thinking=finished.thinking)

    async def stream(
        self, accepted: Accepted, prepared: Prepared, sink: ReplySink
    ) -> tuple[Finished, float | None]:
        """Run the engine into the sink; returns how it ended and the seconds to first text.
        A thinking model's thinking goes to the sink apart: shown (/reasoning show) or only
        said to be going on."""
        text = prepared.prefix
        thought = ""
        finished: Finished | None = None
        started = time.monotonic()
        first_text: float | None = None
        thinking_since: float | None = None
        async for event in self._model.engine.generate(prepared.request):
            if isinstance(event, TextDelta):
                now = time.monotonic()
                if first_text is None:
                    first_text = now - started
                if event.thinking:
                    thought += event.text
                    thinking_since = now if thinking_since is None else thinking_since
                    await sink.thinking(thought if prepared.show_thinking else None,
                                        now - thinking_since)
                    continue
                text += event.text
                await sink.update(text)
            elif isinstance(event, Queued):
                await sink.waiting(event.ahead, stalled=event.stalled)
            elif isinstance(event, Restarted):
                text, thought = prepared.prefix, ""  # the next text replaces what was shown
            else:
                finished = event
        if finished is None:
            raise RuntimeError("the engine ended a reply without Finished")
        self._activity.written(accepted.chat_id, accepted.turn_id, prepared.request.cancel)
        # The whole text is there: a sink holding its first message back sends it whole.
        await sink.update(text, complete=True)
        return finished, first_text

    async def finish(
        self, prepared: Prepared, sink: ReplySink, text: str, *, reason: str, n_tokens: int,
        note: str | None, thinking: str = "",
    ) -> ReplyOutcome | None:
        """Store the finished reply (its text after the prefix it continues, and apart from it
        what the model thought) and show it; None if it was forgotten meanwhile (the sink says
        so)."""
        final = (prepared.prefix + text).strip()
        async with self._sessions() as session:
            reply_row = await session.get(TurnRow, prepared.reply_id)
            if reply_row is None:
                await sink.fail(_(QUESTION_GONE))
                return None
            await usage.count_reply(session, reply_row, n_tokens=n_tokens,
                                    continued=bool(prepared.prefix))
            # A reply that goes on (Continue) keeps what was thought before its first part.
            kept = reply_row.thinking if prepared.prefix else None
            await repo.finish_reply(session, reply_row, final, reason=reason, n_tokens=n_tokens,
                                    thinking=thinking.strip() or kept)
            await session.commit()
        shown = thinking.strip() if prepared.show_thinking else None
        await self.show(prepared.reply_id, sink, final, note, reason, thinking=shown or None)
        return ReplyOutcome(
            text=final, reason=reason, n_tokens=n_tokens,
            window_tokens=prepared.window.n_tokens, left_out=prepared.window.left_out,
        )

    async def show(
        self, reply_id: int, sink: ReplySink, text: str, note: str | None, reason: str, *,
        thinking: str | None = None,
    ) -> None:
        """Show a stored reply as final (with the model's `thinking` above it, if given), with
        what may be done with it next, and record the messages it took as delivered."""
        ids = await sink.finish(text, note, actions=actions_after(text, reason),
                                thinking=thinking)
        async with self._sessions() as session:
            await repo.set_reply_messages(session, reply_id, ids, delivered=True)
            await session.commit()

    async def _fail(self, turn_id: int, *, state: str = "failed") -> None:
        async with self._sessions() as session:
            if state == "failed":
                await repo.fail_user_turn(session, turn_id)
            else:
                await repo.set_turn_values(session, turn_id, state=state)
            await session.commit()
