"""Real speech for the tests: espeak-ng (Debian's package, `make test` installs it) speaks a
phrase, PyAV encodes it as Telegram's apps record voice notes (OGG/Opus, 48 kHz mono) or into
other containers (MP3 audio, an MP4 round video)."""

from __future__ import annotations

import io
import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest

ESPEAK_INSTALL_HINT = (
    "the speech tests need espeak-ng: `make system-packages` (as root) installs it, or "
    "`apt-get install espeak-ng`"
)


def espeak(text: str, *, voice: str = "en-us", speed: int = 150) -> bytes:
    """`text` spoken by espeak-ng, as the WAV file it writes."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        pytest.fail(ESPEAK_INSTALL_HINT, pytrace=False)
    done = subprocess.run([binary, "-v", voice, "-s", str(speed), "--stdout", text],
                          capture_output=True, check=True, timeout=60)
    return done.stdout


def samples_of(data: bytes, rate: int = 48_000) -> np.ndarray:
    """Any audio file as float32 mono samples at `rate`."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    out: list[np.ndarray] = []
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(audio=0):
            frame.pts = None
            out += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32)


def silence(seconds: float, rate: int = 48_000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


def encode(samples: np.ndarray, *, container: str = "ogg", codec: str = "libopus",
           rate: int = 48_000) -> bytes:
    """Mono float32 samples at `rate` encoded into `container` with `codec` (OGG/Opus: a
    Telegram voice note; "mp3"/"libmp3lame": an audio file; "mp4"/"aac": a round video's
    sound)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=rate, layout="mono")
        size = 960
        for start in range(0, len(samples), size):
            chunk = samples[start:start + size]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


def voice_note(text: str, *, voice: str = "en-us", pause: float = 0.3) -> bytes:
    """`text` spoken into an OGG/Opus voice note, with a little quiet before and after as a
    person's recording has."""
    speech = samples_of(espeak(text, voice=voice))
    return encode(np.concatenate([silence(pause), speech, silence(pause)]))


def duration_of(data: bytes) -> float:
    """Seconds of audio in a file."""
    return len(samples_of(data, rate=16_000)) / 16_000


def round_video(samples: np.ndarray, *, rate: int = 48_000, fps: int = 10, side: int = 64) -> bytes:
    """A round video message as Telegram stores one: MP4 with a square video (here small and
    grey) and AAC sound."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as output:
        video = output.add_stream("mpeg4", rate=fps)
        video.width = video.height = side
        video.pix_fmt = "yuv420p"
        sound = output.add_stream("aac", rate=rate, layout="mono")
        grey = np.full((side, side, 3), 128, dtype=np.uint8)
        for index in range(int(len(samples) / rate * fps) + 1):
            frame = av.VideoFrame.from_ndarray(grey, format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                output.mux(packet)
        size = 1024
        for start in range(0, len(samples), size):
            chunk = samples[start:start + size]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in sound.encode(frame):
                output.mux(packet)
        for stream in (video, sound):
            for packet in stream.encode(None):
                output.mux(packet)
    return buffer.getvalue()
