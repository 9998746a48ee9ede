"""Audio as Whisper hears it (`bot.speech.audio`): Telegram's voice notes, audio files and round
videos decoded by PyAV, the length limit kept while decoding, and what is not audio."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from bot.speech.audio import SAMPLE_RATE, decode, seconds
from bot.speech.errors import AudioTooLong, EmptyAudio, UndecodableAudio
from tests.voices import encode, espeak, round_video, samples_of, silence


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return samples_of(espeak("Good morning. How are you today?"))


def test_an_ogg_opus_voice_note(speech: np.ndarray) -> None:
    samples = decode(encode(speech), max_seconds=300)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert seconds(samples) == pytest.approx(len(speech) / 48_000, abs=0.05)
    assert 0.1 < float(np.abs(samples).max()) <= 1.0


def test_mp3_audio_and_a_round_video(speech: np.ndarray) -> None:
    mp3 = decode(encode(samples_of(espeak("Good morning"), rate=44_100), container="mp3",
                        codec="libmp3lame", rate=44_100), max_seconds=300)
    assert 0.5 < seconds(mp3) < 3
    video = decode(round_video(speech), max_seconds=300)
    assert seconds(video) == pytest.approx(len(speech) / 48_000, abs=0.1)


def test_the_limit_holds_while_decoding() -> None:
    ten = encode(silence(10.0))
    assert seconds(decode(ten, max_seconds=9.5)) == pytest.approx(10.0, abs=0.05)  # grace
    with pytest.raises(AudioTooLong) as caught:
        decode(ten, max_seconds=5)
    assert caught.value.limit == 5


def test_what_is_not_audio() -> None:
    with pytest.raises(UndecodableAudio):
        decode(b"this is not audio at all" * 50, max_seconds=60)
    with pytest.raises(UndecodableAudio):
        decode(b"", max_seconds=60)
    header_only = io.BytesIO()
    with wave.open(header_only, "wb") as empty:  # a WAV file with its header and no sound
        empty.setnchannels(1)
        empty.setsampwidth(2)
        empty.setframerate(16_000)
    with pytest.raises(EmptyAudio):
        decode(header_only.getvalue(), max_seconds=60)
    assert SAMPLE_RATE == 16_000
