"""Hearing what people send, front-end neutral: a voice note, an audio file or a round video
becomes its transcript (`bot.speech`), which is then asked like a typed question.

A transcription is a job in the replies' fair queue (the engine's `TakesTurns`, where the
model shares this machine's CPU): it waits its turn as a reply would, its place shown, and
holds one of the engine's places while it runs. Transcriptions also go one at a time among
themselves (the recogniser has one worker), and line up for that before they ask for a turn,
so several voice notes never hold several of the replies' places while one is heard.

The reply to a heard question begins with what was heard (`heading`), so the asker sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.running import RunningModel
from bot.chat.sink import ReplyAction, ReplySink
from bot.engine.base import CancelToken, Queued, TakesTurns
from bot.engine.requests import TurnCancelled
from bot.errors import UserError
from bot.i18n import _
from bot.llama.cpu import physical_cores
from bot.metrics import Heard, Metrics
from bot.reading.context import ContextItem, decode_context
from bot.settings import Settings
from bot.speech import (
    AudioTooLong,
    EmptyAudio,
    NothingHeard,
    SpeechCancelled,
    SpeechError,
    SpeechModelError,
    SpeechOptions,
    Transcriber,
    Transcript,
    UndecodableAudio,
    VoiceOff,
)
from bot.store.schema import TurnRow

log = logging.getLogger(__name__)

PlaceListener = Callable[[Queued], Awaitable[None]]
MIC = "🎤"
ADMIN_ALERT_INTERVAL = 600.0
"""Seconds between two alerts to the admins about a broken speech model."""
_OUTCOMES: dict[type[SpeechError], Heard] = {
    AudioTooLong: "too_long", UndecodableAudio: "undecodable", EmptyAudio: "undecodable",
    NothingHeard: "nothing_heard", SpeechModelError: "model_error", VoiceOff: "model_error",
    SpeechCancelled: "cancelled",
}


def heading(transcript: str) -> str:
    """What was heard, as the first line of the reply to it."""
    return f"{MIC} “{transcript.strip()}”"


def voice_context(transcript: str, author: str | None) -> ContextItem:
    """What a question asked about a voice note (a mention replying to it, `/ask` as a reply,
    an audio file's caption) brings along: the note's transcript, and whose it is."""
    return ContextItem(kind="voice", text=transcript.strip(), author=author)


def heading_of(question: TurnRow) -> str | None:
    """The heading of the reply to a stored question (None: a typed one): its text when it
    was heard, or the transcript it was asked about."""
    if not question.heard_from:
        return None
    heard = [item.text for item in decode_context(question.context) if item.kind == "voice"]
    return heading(heard[0] if heard else question.text)


class HeadedSink:
    """A reply sink whose reply begins with `heading` (what the question was heard as)."""

    def __init__(self, inner: ReplySink, heading: str) -> None:
        self._inner = inner
        self._heading = heading

    def _with_heading(self, text: str) -> str:
        return f"{self._heading}\n\n{text}" if text.strip() else self._heading

    async def waiting(self, ahead: int, *, stalled: bool = False) -> None:
        await self._inner.waiting(ahead, stalled=stalled)

    async def update(self, text: str, *, complete: bool = False) -> None:
        await self._inner.update(self._with_heading(text), complete=complete)

    async def thinking(self, text: str | None, seconds: float) -> None:
        await self._inner.thinking(text, seconds)

    async def finish(
        self, text: str, note: str | None = None, *, actions: Sequence[ReplyAction] = (),
        thinking: str | None = None,
    ) -> Sequence[int]:
        shown = self._with_heading(text)
        if thinking is None:
            return await self._inner.finish(shown, note, actions=actions)
        return await self._inner.finish(shown, note, actions=actions, thinking=thinking)

    async def fail(self, message: str) -> None:
        await self._inner.finish(self._heading, message)


class Hearing:
    """Transcriptions for every front end, in the replies' fair queue."""

    def __init__(
        self, *, settings: Settings, sessions: async_sessionmaker[AsyncSession],
        model: RunningModel, metrics: Metrics,
    ) -> None:
        self._sessions = sessions
        self._model = model
        self._metrics = metrics
        self._transcriber = Transcriber(SpeechOptions(
            model=settings.asr_model, directory=settings.data / "asr",
            threads=settings.asr_threads or physical_cores(), language=settings.asr_language,
            max_seconds=settings.asr_max_seconds,
        ))
        self.max_seconds = settings.asr_max_seconds
        self._line = asyncio.Lock()
        self._in_line = 0
        self._last_alert = float("-inf")

    @property
    def enabled(self) -> bool:
        return self._transcriber.enabled

    async def transcribe(
        self, audio: bytes | Path, *, chat_key: str, share: str | None = None,
        hint: str | None = None, cancel: CancelToken | None = None,
        on_place: PlaceListener | None = None,
    ) -> Transcript:
        """What `audio` says. `chat_key`/`share`: whose turn it takes, as for a reply; `hint`:
        the sender's Telegram language; `on_place` hears the place while it waits.

        Raises a `bot.speech.SpeechError`, or EngineBusy when the queue is full."""
        cancel = cancel or CancelToken()
        ahead = self._in_line
        self._in_line += 1
        try:
            if ahead and on_place is not None:
                await on_place(Queued(ahead))
            async with self._line, self._turn(chat_key, share, cancel, on_place):
                return await self._hear(audio, hint, cancel)
        except TurnCancelled:
            self._metrics.transcription("cancelled")
            raise SpeechCancelled("stopped while waiting for a turn") from None
        finally:
            self._in_line -= 1

    @contextlib.asynccontextmanager
    async def _turn(
        self, chat_key: str, share: str | None, cancel: CancelToken,
        on_place: PlaceListener | None,
    ) -> AsyncIterator[None]:
        """A fair turn on an engine that shares the CPU; at once on one that does not (a
        remote engine's model runs elsewhere)."""
        async with self._model.serving() as engine:
            if isinstance(engine, TakesTurns):
                async with engine.turn(chat_key=chat_key, cancel=cancel, share=share,
                                       on_place=on_place):
                    yield
            else:
                yield

    async def _hear(self, audio: bytes | Path, hint: str | None, cancel: CancelToken) -> Transcript:
        try:
            heard = await self._transcriber.transcribe(audio, hint=hint, stop=cancel)
        except asyncio.CancelledError:
            cancel.cancel()  # the worker thread stops at its next segment
            self._metrics.transcription("cancelled")
            raise
        except SpeechError as exc:
            self._metrics.transcription(_OUTCOMES.get(type(exc), "failed"))
            if isinstance(exc, SpeechModelError):
                log.error("the speech model cannot be used: %s", exc)
            raise
        except Exception:
            self._metrics.transcription("failed")
            raise
        self._metrics.transcription("heard", seconds=heard.seconds,
                                    real_time_factor=heard.real_time_factor)
        log.info("heard %.1f s of audio (%s) in %.1f s", heard.seconds, heard.language,
                 heard.working)
        return heard

    async def heading_for(self, turn_id: int) -> str | None:
        """The heading of the reply to question `turn_id` (None: typed, or gone)."""
        async with self._sessions() as session:
            question = await session.get(TurnRow, turn_id)
            return heading_of(question) if question is not None else None

    def too_long(self, seconds: float | None) -> str | None:
        """The refusal of audio whose length is known to be past the limit (None: go on)."""
        if seconds is None or seconds <= self.max_seconds:
            return None
        self._metrics.transcription("too_long")
        return self.refusal(AudioTooLong(seconds, self.max_seconds))

    def refusal(self, error: Exception) -> str:
        """The line its sender reads about audio that was not heard, in the current
        language (a UserError's own text, such as a full queue's)."""
        if isinstance(error, UserError):
            return str(error)
        if isinstance(error, AudioTooLong):
            if error.seconds is None:
                return _("{mic} That is longer than {limit} s, the most I listen to.",
                         mic=MIC, limit=f"{error.limit:g}")
            return _("{mic} That is {seconds} s long; I listen to {limit} s at most.", mic=MIC,
                     seconds=f"{error.seconds:.0f}", limit=f"{error.limit:g}")
        texts: dict[type[Exception], str] = {
            VoiceOff: _("{mic} Voice notes are off on this bot (no speech model is set up).",
                        mic=MIC),
            UndecodableAudio: _("{mic} I could not read that audio.", mic=MIC),
            EmptyAudio: _("{mic} There is no sound in that file.", mic=MIC),
            NothingHeard: _("{mic} I heard nothing in that: only silence.", mic=MIC),
            SpeechModelError: _("⚠️ I cannot listen right now: the speech model is missing or "
                                "broken. The bot's admins have been told."),
            SpeechCancelled: _("⏹ stopped before I finished listening."),
        }
        return texts.get(type(error), _("⚠️ Listening to that failed; the error was logged."))

    def alert_due(self, error: Exception) -> bool:
        """Whether the admins should hear of this error now: a broken model, at most once
        every ADMIN_ALERT_INTERVAL seconds."""
        if not isinstance(error, SpeechModelError):
            return False
        now = time.monotonic()
        if now - self._last_alert < ADMIN_ALERT_INTERVAL:
            return False
        self._last_alert = now
        return True

    def close(self) -> None:
        self._transcriber.close()
