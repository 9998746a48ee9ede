"""Writing the last reply again (Regenerate, Continue, /retry): which reply a button or /retry
means, whether it may be written again, and the writing: a new sample in its place, or more of
one that stopped at /n. The stored reply stays as it was if that fails or is stopped before new
text."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.activity import ChatActivity
from bot.chat.chat_settings import ChatSettings
from bot.chat.conversation import (
    MODEL_FAILED,
    QUESTION_GONE,
    Accepted,
    Conversation,
    ReplyOutcome,
    TurnGone,
)
from bot.chat.preparation import Prepared, ReplyPreparation
from bot.chat.running import RunningModel
from bot.chat.sink import EMPTY_NOTE, STOP_NOTES, ReplySink, shown_text, stop_note
from bot.core.prompt import Turn
from bot.core.templates import TemplateError
from bot.engine.base import CancelToken
from bot.errors import EngineBusy, InputTooLong, UserError
from bot.i18n import N_, _
from bot.metrics import Metrics
from bot.store import repository as repo
from bot.store.schema import ChatRow, TurnRow

log = logging.getLogger(__name__)

Redo = Literal["regenerate", "continue"]
"""A finished reply written again: a new sample in its place, or more of it (it stopped at /n)."""

BUSY = N_("A reply is being written here: wait for it, or stop it first.")
NOTHING_TO_REDO = N_("There is no reply here to write again yet.")
NOTHING_TO_CONTINUE = N_("That reply is complete: only one cut off at the /n limit can go on.")
DEAD = N_("This button no longer works.")
NOT_LAST = N_("A newer message exists: only the last reply can be written again.")
NOT_REDONE = N_("⚠️ Not written again: {reason}")
"""The texts above are in English; `Refused` carries them translated."""


@dataclass(frozen=True)
class StoredReply:
    """A stored reply being written again: what it was, to keep if the new one fails."""

    text: str
    reason: str
    n_tokens: int

    @property
    def note(self) -> str | None:
        """Its note, in the current language."""
        return stop_note(self.reason)


class Refused(UserError):
    """A reply that cannot be written again now (the text in the current language).

    `stale`: its buttons no longer apply. `kept`: found out while writing it again, the stored
    reply it would have replaced, shown again as it was."""

    def __init__(
        self, text: str, *, stale: bool = False, kept: StoredReply | None = None
    ) -> None:
        super().__init__(text)
        self.stale = stale
        self.kept = kept


@dataclass(frozen=True)
class RedoPlan:
    """A stored reply to write again, and where it is shown."""

    accepted: Accepted
    redo: Redo
    message_ids: list[int]
    shown: str
    """What its messages show now: the text and its note, as the sink wrote them."""
    asker: int | None
    reply_to: int | None
    """The question's message (Telegram)."""
    thread_id: int | None


@dataclass(frozen=True)
class Question:
    """A question whose reply a button belongs to."""

    turn_id: int
    asker: int | None


@dataclass(frozen=True)
class _Again(Prepared):
    """A stored reply prepared to be written again."""

    previous: StoredReply | None = None


class ReplyRedo:
    """Finds the reply a button or /retry means, checks that it may be written again, and
    writes it again."""

    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], model: RunningModel,
        chat_settings: ChatSettings, preparation: ReplyPreparation, activity: ChatActivity,
        conversation: Conversation, metrics: Metrics,
    ) -> None:
        self._sessions, self._model, self._metrics = sessions, model, metrics
        self._chat_settings, self._preparation = chat_settings, preparation
        self._activity, self._conversation = activity, conversation

    # -- which reply, and whether it may be written again ----------------------------------

    async def question(self, conversation_id: int, question_id: int, message_id: int) -> Question:
        """The question behind a button of message `message_id` (raises Refused if the data
        does not name a question of this conversation whose reply is in that message)."""
        async with self._sessions() as session:
            question, _reply = await self._pressed(session, conversation_id, question_id, message_id)
            return Question(question.id, question.user_id)

    async def for_button(
        self, conversation_id: int, question_id: int, redo: Redo, *, message_id: int
    ) -> RedoPlan:
        """The plan for a Regenerate or Continue press, or Refused with the reason."""
        async with self._sessions() as session:
            question, reply = await self._pressed(session, conversation_id, question_id,
                                                  message_id)
            return await self._plan(session, conversation_id, question, reply, redo)

    async def for_last(self, conversation_id: int, redo: Redo) -> RedoPlan:
        """The plan for /retry: the conversation's last reply."""
        async with self._sessions() as session:
            chat = await session.get(ChatRow, conversation_id)
            last = await repo.last_turn(session, chat) if chat is not None else None
            if last is None or last.role != "assistant" or last.reply_to is None:
                raise Refused(_(NOTHING_TO_REDO))
            question = await session.get(TurnRow, last.reply_to)
            if question is None:
                raise Refused(_(NOTHING_TO_REDO))
            return await self._plan(session, conversation_id, question, last, redo)

    async def _pressed(
        self, session: AsyncSession, conversation_id: int, question_id: int, message_id: int
    ) -> tuple[TurnRow, TurnRow]:
        question = await session.get(TurnRow, question_id)
        if question is None or question.role != "user" or question.chat_id != conversation_id:
            raise Refused(_(DEAD), stale=True)
        reply = await repo.reply_for(session, question.id)
        if reply is None:
            raise Refused(_(DEAD), stale=True)
        ids = repo.decode_message_ids(reply.message_ids)
        # A reply being written shows its Stop button a moment before its first message's id
        # is stored: a press in that moment is this reply's.
        if message_id not in ids and not (reply.state == "streaming" and not ids):
            raise Refused(_(DEAD), stale=True)
        return question, reply

    async def _plan(
        self, session: AsyncSession, conversation_id: int, question: TurnRow, reply: TurnRow,
        redo: Redo,
    ) -> RedoPlan:
        chat = await session.get(ChatRow, conversation_id)
        newest = await repo.last_turn(session, chat) if chat is not None else None
        if newest is None or newest.id != reply.id:
            raise Refused(_(NOT_LAST), stale=True)
        if self._activity.busy(conversation_id) or reply.state != "complete":
            raise Refused(_(BUSY))
        if redo == "continue" and reply.stop_reason != "length":
            raise Refused(_(NOTHING_TO_CONTINUE))
        shown = shown_text(reply.text, STOP_NOTES.get(reply.stop_reason or ""))
        return RedoPlan(
            accepted=Accepted(conversation_id, question.id, question.user_id), redo=redo,
            message_ids=repo.decode_message_ids(reply.message_ids), shown=shown,
            asker=question.user_id, reply_to=question.message_id, thread_id=question.thread_id,
        )

    # -- the writing ---------------------------------------------------------------------------

    async def write_again(
        self, accepted: Accepted, sink: ReplySink, redo: Redo
    ) -> ReplyOutcome | None:
        """Write the question's stored reply (the chat's last turn) again into the sink that
        shows it: replaced by a new sample, or continued. Returns None where it stays as it
        was (refused, failed, or stopped before new text: the sink shows it again)."""
        async with self._activity.writing(accepted.chat_id, accepted.turn_id,
                                          accepted.asker) as cancel, \
                self._model.serving():
            try:
                prepared = await self._prepare(accepted, cancel, redo)
            except TurnGone:
                await sink.fail(_(QUESTION_GONE))
                return None
            except Refused as exc:
                if exc.kept is None:
                    await sink.fail(str(exc))
                else:  # shown as it was, its buttons gone with the chance to redo it
                    await sink.finish(exc.kept.text, exc.kept.note)
                return None
            return await self._write(accepted, prepared, sink)

    async def _write(
        self, accepted: Accepted, prepared: _Again, sink: ReplySink
    ) -> ReplyOutcome | None:
        previous = prepared.previous
        assert previous is not None
        try:
            finished, first_text = await self._conversation.stream(accepted, prepared, sink)
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
        note = stop_note(finished.reason) if final else _(EMPTY_NOTE)
        return await self._conversation.finish(prepared, sink, finished.text,
                                               reason=finished.reason, n_tokens=n_tokens,
                                               note=note, thinking=finished.thinking)

    async def _prepare(self, accepted: Accepted, cancel: CancelToken, redo: Redo) -> _Again:
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
                raise Refused(_(NOT_LAST))
            previous = StoredReply(reply.text, reply.stop_reason or "eos", reply.n_tokens or 0)
            newest = await repo.last_turn(session, chat)
            if newest is None or newest.id != reply.id:
                raise Refused(_(NOT_LAST), kept=previous)
            params = self._chat_settings.params_of(chat)
            tail = Turn("assistant", reply.text, unfinished=True) if redo == "continue" else None
            try:
                window, _kept = await self._preparation.fit(session, chat, params,
                                                            without=reply.id, tail=tail)
            except InputTooLong:
                raise Refused(_("it no longer fits the context window (/ctx minus /n)."),
                              kept=previous) from None
            except TemplateError:
                raise Refused(_("the model's chat template cannot continue a reply."),
                              kept=previous) from None
            reply.delivered = False
            await session.commit()
        # A new sample even where the operator fixed the seed (it would write the same reply).
        seed = -1 if redo == "regenerate" else None
        request = self._preparation.request(chat, params, window, cancel, seed=seed)
        prefix = previous.text if redo == "continue" else ""
        return _Again(reply.id, window, request, prefix, previous,
                      show_thinking=params.reasoning == "show")

    async def _keep(self, prepared: _Again, sink: ReplySink, note: str | None) -> None:
        """Show the stored reply again as it was (the redo failed or was stopped at once)."""
        previous = prepared.previous
        assert previous is not None
        await self._conversation.show(prepared.reply_id, sink, previous.text, note,
                                      previous.reason)
