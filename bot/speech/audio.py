"""Audio as Whisper hears it: any file PyAV (FFmpeg's libraries, bundled) reads — Telegram's
OGG/Opus voice notes, MP3 and M4A audio, the MP4 of a round video — decoded to 16 kHz mono
float32, stopping at the length limit.

The limit is enforced while decoding, not after: a 20 MB file of low-bitrate Opus holds hours
of sound, which decoded whole would take gigabytes.
"""

from __future__ import annotations

import gc
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from bot.speech.errors import AudioTooLong, EmptyAudio, UndecodableAudio

SAMPLE_RATE = 16_000
GRACE_SECONDS = 1.0
"""How far past the limit audio may run: a note Telegram calls 300 s may hold 300.4."""

Samples = npt.NDArray[np.float32]


def decode(source: bytes | Path, *, max_seconds: float) -> Samples:
    """The audio of `source` (its first audio stream) as 16 kHz mono samples in [-1, 1].

    Raises AudioTooLong past `max_seconds` (plus a second's grace), UndecodableAudio for what
    is not audio, EmptyAudio for a stream without a sample."""
    limit = int((max_seconds + GRACE_SECONDS) * SAMPLE_RATE)
    chunks: list[npt.NDArray[Any]] = []
    count = 0
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    try:
        opened = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source),
                         mode="r", metadata_errors="ignore")
        with opened as container:
            if not container.streams.audio:
                raise UndecodableAudio("no audio stream")
            for frame in _frames(container, container.streams.audio[0]):
                frame.pts = None  # resampled as one stream, whatever its timestamps say
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    count += chunks[-1].size
                if count > limit:
                    raise AudioTooLong(None, max_seconds)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
                count += chunks[-1].size
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise UndecodableAudio(str(exc)) from None
    finally:
        # PyAV's resampler keeps buffers until a collection (faster-whisper's decode does the same).
        del resampler
        gc.collect()
    if count > limit:
        raise AudioTooLong(count / SAMPLE_RATE, max_seconds)
    if count == 0:
        raise EmptyAudio("no samples")
    return (np.concatenate(chunks).astype(np.float32) / 32768.0).astype(np.float32)


def _frames(container: av.container.InputContainer,
            stream: av.audio.stream.AudioStream) -> Iterator[av.AudioFrame]:
    """The stream's frames, skipping the ones FFmpeg finds invalid (a damaged packet)."""
    frames = container.decode(stream)
    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.InvalidDataError:
            continue


def seconds(samples: Samples) -> float:
    return samples.size / SAMPLE_RATE
