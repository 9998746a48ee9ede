"""Speech recognition, offline: faster-whisper on the CPU (`transcriber.py`), audio decoded with
PyAV (`audio.py`), the language rule (`language.py`), the Whisper models shipped in PyPI
packages (`packaged.py`) and why a transcription may fail (`errors.py`).

Below the chat layer: it knows neither Telegram nor the conversation.
"""

from bot.speech.errors import (
    AudioTooLong,
    EmptyAudio,
    NothingHeard,
    SpeechCancelled,
    SpeechError,
    SpeechModelError,
    UndecodableAudio,
    VoiceOff,
)
from bot.speech.transcriber import SpeechOptions, Transcriber, Transcript

__all__ = [
    "AudioTooLong", "EmptyAudio", "NothingHeard", "SpeechCancelled", "SpeechError",
    "SpeechModelError", "SpeechOptions", "Transcriber", "Transcript", "UndecodableAudio",
    "VoiceOff",
]
