"""Speech to text with faster-whisper (CTranslate2, int8 on the CPU), on a worker thread of its
own: one transcription at a time, never on the event loop.

A transcription decodes the audio (PyAV, within the length limit), keeps the parts with speech
(Silero VAD, shipped with faster-whisper: silence is "nothing heard" without running Whisper),
chooses the language (`bot.speech.language`) and transcribes. It does what `WhisperModel.
transcribe(audio, vad_filter=True)` does, in the same passes, with the language rule between
detection and decoding. The model is loaded at the first transcription and kept.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bot.speech import audio
from bot.speech.errors import NothingHeard, SpeechCancelled, SpeechModelError, VoiceOff
from bot.speech.language import AUTO, choose_language, whisper_language
from bot.speech.packaged import PACKAGED, prepare, sources

log = logging.getLogger(__name__)

BEAM_SIZE = 5
"""faster-whisper's own default: the benchmark compares against it called as it comes."""


class Stop(Protocol):
    """Whatever says a transcription is no longer wanted (`bot.engine.base.CancelToken`)."""

    @property
    def cancelled(self) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class SpeechOptions:
    """How speech is recognised: the `asr_*` settings."""

    model: str
    """A folder with a CTranslate2 Whisper model, a packaged model's name (`base`), or a name
    faster-whisper fetches (`small`, `large-v3`, a Hub id); empty: voice is off."""
    directory: Path
    """Where packaged models are joined (in the data directory)."""
    threads: int
    language: str = AUTO
    max_seconds: float = 300.0


@dataclass(frozen=True)
class Transcript:
    """What was heard in a piece of audio."""

    text: str
    language: str
    seconds: float
    """How long the audio is."""
    working: float
    """Seconds spent on it (decoding and recognition, not waiting for a turn)."""

    @property
    def real_time_factor(self) -> float:
        return self.working / self.seconds if self.seconds > 0 else 0.0


class Transcriber:
    """faster-whisper behind one worker thread."""

    def __init__(self, options: SpeechOptions) -> None:
        self.options = options
        self._worker: ThreadPoolExecutor | None = None
        self._model: Any = None
        self._load_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.options.model.strip())

    async def transcribe(
        self, source: bytes | Path, *, hint: str | None = None, stop: Stop | None = None
    ) -> Transcript:
        """The text of `source` (a file's bytes or path). `hint`: the sender's Telegram
        language. Raises a `bot.speech.errors.SpeechError` when there is none to give."""
        if not self.enabled:
            raise VoiceOff("asr_model is empty")
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="speech")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._transcribe, source, hint, stop)

    def close(self) -> None:
        """Let the worker thread end once the transcription in progress (if any) is done."""
        if self._worker is not None:
            self._worker.shutdown(wait=False, cancel_futures=True)
            self._worker = None

    # -- on the worker thread ----------------------------------------------------------------

    def _transcribe(self, source: bytes | Path, hint: str | None, stop: Stop | None) -> Transcript:
        started = time.monotonic()
        samples = audio.decode(source, max_seconds=self.options.max_seconds)
        length = audio.seconds(samples)
        speech = _speech_only(samples)
        if speech.size == 0:
            raise NothingHeard("no speech in the audio")
        model = self.load()  # bad audio and silence are told apart without the model
        language = self._language(model, speech, hint)
        segments, _info = model.transcribe(speech, language=language, beam_size=BEAM_SIZE,
                                           vad_filter=False)
        parts: list[str] = []
        for segment in segments:  # a generator: each segment is decoded as it is asked for
            if stop is not None and stop.cancelled:
                raise SpeechCancelled("stopped")
            parts.append(segment.text)
        text = "".join(parts).strip()
        if not text:
            raise NothingHeard("the model heard no words")
        return Transcript(text, language, length, time.monotonic() - started)

    def _language(self, model: Any, speech: audio.Samples, hint: str | None) -> str:
        """The fixed `asr_language`, else Whisper's detection with the hint's rule."""
        if not model.model.is_multilingual:
            return "en"
        supported = model.supported_languages
        fixed = self.options.language
        if fixed != AUTO:
            return whisper_language(fixed, supported) or fixed
        _best, _likelihood, ranked = model.detect_language(speech)
        return choose_language(ranked, whisper_language(hint, supported))

    def load(self) -> Any:
        """The model, loaded the first time (SpeechModelError: missing or unusable)."""
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> Any:
        from faster_whisper import WhisperModel

        where = locate_model(self.options.model, self.options.directory)
        started = time.monotonic()
        try:
            model = WhisperModel(where, device="cpu", compute_type="int8",
                                 cpu_threads=self.options.threads)
        except Exception as exc:  # CTranslate2's RuntimeError, the Hub's errors, a bad file
            raise SpeechModelError(f"cannot load the speech model {where}: {exc}") from exc
        log.info("speech model loaded: %s (%d threads, %.1f s)", where, self.options.threads,
                 time.monotonic() - started)
        return model


def locate_model(setting: str, directory: Path) -> str:
    """What faster-whisper is given for `asr_model`: a packaged model joined into
    `directory`, a folder holding a converted model, or a name it fetches itself."""
    value = setting.strip()
    packaged = PACKAGED.get(value)
    if packaged is not None and sources(packaged) is not None:
        return str(prepare(packaged, directory))
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise SpeechModelError(
                f"{path} holds no model.bin: asr_model must be a folder with a CTranslate2 "
                "Whisper model (or a model name)"
            )
        return str(path)
    if value.startswith(("/", ".", "~")) or value.count("/") > 1:
        raise SpeechModelError(f"no speech model folder at {path}")
    if packaged is not None:
        log.warning("the Whisper %s packages are not installed (`%s`): faster-whisper will try "
                    "to download the model", value, packaged.install_hint)
    return value  # a faster-whisper model name or Hub id: fetched where the machine may


def _speech_only(samples: audio.Samples) -> audio.Samples:
    """The parts of `samples` with speech, joined (as `transcribe(vad_filter=True)` does)."""
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    chunks = get_speech_timestamps(samples, VadOptions())
    if not chunks:
        return samples[:0]
    pieces, _metadata = collect_chunks(samples, chunks)
    return np.concatenate(pieces).astype(np.float32)
