"""Memory past the window: turns that leave a chat's window are folded into a running summary,
written by the same model in the background while no reply is being written, stored per chat
and placed after the system prompt (see `ReplyPreparation.system`).

A summary never delays a reply: it starts only when no reply is running or waiting, and a
reply that arrives meanwhile cancels it (it is written again later, from the same turns).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.running import RunningModel
from bot.core.chats import summary_key
from bot.core.prompt import Segment, Turn, speaker_line
from bot.core.reasoning import QUIET
from bot.engine.base import CancelToken, Finished, GenerationRequest, SamplingParams, TextDelta
from bot.errors import AlpacaBotError
from bot.store import repository as repo
from bot.store.schema import ChatRow, TurnRow

log = logging.getLogger(__name__)

SUMMARY_INTRO = "Summary of the earlier conversation: "
"""What precedes a chat's summary where it is placed after the system prompt."""
SUMMARIZER_SYSTEM = "You write short, factual summaries of conversations."
IDLE_WAIT = 0.5
"""Seconds without any reply before a summary starts."""
MAX_FOLDS = 8
"""Summary passes per chat in one go (a long backlog is folded chunk by chunk)."""


def anchor(row: TurnRow) -> int:
    """Where a turn sits in its conversation (a reply at its question)."""
    return repo.conversation_order(row)[0]


def summary_on(chat: ChatRow) -> bool:
    return chat.summary_on is not False


def system_with_summary(system: str | None, default_system: str | None, summary: str) -> str:
    """The system text of a window that carries the chat's summary after the system prompt."""
    base = (system if system is not None else default_system or "").strip()
    return (base + "\n\n" if base else "") + SUMMARY_INTRO + summary.strip()


def summary_request_text(previous: str | None, turns: list[Turn], words: int) -> str:
    lines = [speaker_line("Assistant" if t.role == "assistant" else "User", t.content)
             for t in turns]
    parts = []
    if previous:
        parts.append(f"Summary of the conversation so far:\n{previous}\n")
    parts.append("The conversation went on:\n" + "\n".join(lines) + "\n")
    parts.append(f"Write {'an updated' if previous else 'a'} summary of the whole conversation in "
                 f"at most {words} words. Keep names, facts and what was decided.")
    return "\n".join(parts)


class Summaries:
    """Keeps each chat's running summary; see the module's docstring."""

    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], model: RunningModel,
        summary_tokens: int,
    ) -> None:
        self._sessions = sessions
        self._model = model
        self.summary_tokens = summary_tokens
        self._due: dict[int, int] = {}
        """Chats with turns that left the window: chat id -> where the window now starts."""
        self._current: CancelToken | None = None
        model.on_reply_start(self._yield_to_reply)
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        """Summaries written so far (for tests and logs)."""
        self._wrote = asyncio.Condition()

    # -- what the conversation tells it -------------------------------------------------------

    def left_window(self, chat_id: int, first_kept: int) -> None:
        """Turns of the chat older than turn `first_kept` are no longer in its window."""
        if self.summary_tokens <= 0:
            return
        self._due[chat_id] = max(first_kept, self._due.get(chat_id, 0))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._work(), name="summaries")

    def _yield_to_reply(self) -> None:
        if self._current is not None:
            self._current.cancel()

    async def until_written(self, count: int) -> None:
        """Until `count` summaries have been written in all."""
        async with self._wrote:
            await self._wrote.wait_for(lambda: self.written >= count)

    async def aclose(self) -> None:
        if self._current is not None:
            self._current.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the background work ------------------------------------------------------------------

    async def _work(self) -> None:
        while self._due:
            await self._until_idle()
            chat_id = next(iter(self._due))
            first_kept = self._due.pop(chat_id)
            try:
                done = await self._fold(chat_id, first_kept)
            except AlpacaBotError as exc:
                log.warning("summary of chat %d not written: %s", chat_id, exc)
                continue
            except Exception:
                log.exception("summary of chat %d failed", chat_id)
                continue
            if not done:  # a reply came: do it again once idle
                self._due[chat_id] = max(first_kept, self._due.get(chat_id, 0))

    async def _until_idle(self) -> None:
        """Until no reply has been written for IDLE_WAIT seconds."""
        while True:
            await self._model.until_no_replies()
            await asyncio.sleep(IDLE_WAIT)
            if not self._model.replies:
                return

    async def _fold(self, chat_id: int, first_kept: int) -> bool:
        """Fold the chat's turns before `first_kept` into its summary; False if interrupted."""
        for _ in range(MAX_FOLDS):
            async with self._sessions() as session:
                chat = await session.get(ChatRow, chat_id)
                if chat is None or not summary_on(chat):
                    return True
                start = chat.summary_upto or 0
                rows = [row for row in await repo.conversation(session, chat, after=start,
                                                               up_to=first_kept - 1)
                        if row.state != "pending"]
                previous = chat.summary
            if not rows:
                return True
            chunk = await self._fitting(previous, rows)
            summary = await self._write(chat_id, previous, chunk)
            if summary is None:
                return False
            async with self._sessions() as session:
                await repo.set_chat_values(session, chat_id, summary=summary,
                                           summary_upto=anchor(chunk[-1]))
                await session.commit()
            async with self._wrote:
                self.written += 1
                self._wrote.notify_all()
            log.info("chat %d: %d turns folded into its summary (%d characters)", chat_id,
                     len(chunk), len(summary))
        return True

    async def _fitting(self, previous: str | None, rows: list[TurnRow]) -> list[TurnRow]:
        """The oldest turns whose summary request fits the model's context."""
        engine = self._model.engine
        room = engine.info.n_ctx - self.summary_tokens - 16
        chunk = list(rows)
        while len(chunk) > 1:
            prompt = self._prompt(previous, chunk)
            if await engine.count_tokens(prompt) <= room:
                break
            cut = max(1, len(chunk) // 2)
            while cut < len(chunk) and anchor(chunk[cut]) == anchor(chunk[cut - 1]):
                cut += 1  # a question and its reply stay together
            if cut >= len(chunk):
                cut = 1
            chunk = chunk[:cut]
        return chunk

    def _prompt(self, previous: str | None, rows: list[TurnRow]) -> tuple[Segment, ...]:
        turns = [Turn("assistant", r.text) if r.role == "assistant" else Turn("user", r.text, r.speaker)
                 for r in rows]
        words = max(10, self.summary_tokens * 2 // 3)
        request = Turn("user", summary_request_text(previous, turns, words))
        # A thinking model is asked not to think for a summary (where its template can).
        return self._model.reasoning.format_for(QUIET).render(SUMMARIZER_SYSTEM, [request])

    async def _write(self, chat_id: int, previous: str | None, rows: list[TurnRow]) -> str | None:
        """The model's new summary, bounded by summary_tokens; None if a reply interrupted it."""
        token = CancelToken()
        self._current = token
        if self._model.replies:
            return None
        prompt = self._prompt(previous, rows)
        request = GenerationRequest(
            chat_key=summary_key(chat_id), prompt=prompt,
            sampling=SamplingParams(n_predict=self.summary_tokens, temp=0.2, seed=-1),
            stop=self._model.chat_format.stop, cancel=token,
            # Where it thinks anyway, the block is closed at once: the summary is the answer.
            thinking=self._model.reasoning.request(prompt, mode=QUIET, budget=0),
        )
        text = ""
        finished: Finished | None = None
        try:
            async with self._model.serving(background=True) as engine:
                async for event in engine.generate(request):
                    if isinstance(event, TextDelta) and not event.thinking:
                        text += event.text
                    elif isinstance(event, Finished):
                        finished = event
        finally:
            self._current = None
        if finished is None or finished.reason == "cancelled" or token.cancelled:
            return None
        return await self._bounded(finished.text.strip() or text.strip())

    async def _bounded(self, summary: str) -> str:
        """Cut the summary (at a word) until it fits summary_tokens."""
        engine = self._model.engine
        words = summary.split()
        while words and await engine.count_tokens((Segment(" ".join(words), False),)) > \
                self.summary_tokens:
            words = words[: max(0, len(words) - max(1, len(words) // 10))]
        return " ".join(words)
