"""Why speech did not become text, as the speech package raises it; the chat layer words it
for the person who sent the audio (`bot.chat.hearing`).

    SpeechError
     ├── VoiceOff            no speech model is configured (`asr_model` empty)
     ├── AudioTooLong        longer than `asr_max_seconds`
     ├── UndecodableAudio    not audio PyAV can read
     ├── EmptyAudio          a file without a single sample
     ├── NothingHeard        only silence, or nothing the model could make out
     ├── SpeechModelError    the model is missing, corrupt or a changed upload (admins hear)
     └── SpeechCancelled     stopped before it was done (the bot stopping)
"""

from __future__ import annotations

from bot.errors import AlpacaBotError


class SpeechError(AlpacaBotError):
    """Audio could not be turned into text."""


class VoiceOff(SpeechError):
    """No speech model is configured."""


class AudioTooLong(SpeechError):
    """Longer than the limit; `seconds` is None where only "longer" is known (decoding stopped
    at the limit)."""

    def __init__(self, seconds: float | None, limit: float) -> None:
        super().__init__(f"audio of {seconds or 'more than ' + str(limit)} s; the limit is {limit} s")
        self.seconds, self.limit = seconds, limit


class UndecodableAudio(SpeechError):
    """Not audio that can be read (a corrupt file, a format without sound)."""


class EmptyAudio(SpeechError):
    """Audio without a single sample."""


class NothingHeard(SpeechError):
    """Silence, or nothing the model could make out."""


class SpeechModelError(SpeechError):
    """The speech model is missing, corrupt, or not the upload it should be."""


class SpeechCancelled(SpeechError):
    """Stopped before it was done."""
