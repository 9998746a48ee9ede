"""Reading documents and pictures: what a 200-page document costs, and OCR of a screenshot.

On the demo model's engine (its tokenizer counts the passages, as in the bot) and a SQLite
database in a temporary directory: a `--pages`-page PDF of varied English text with a fact on
one page per question is sent to a chat; it prints the time to ingest it (read its text layer,
split it into passages, store them), the time to retrieve a question's passages (the BM25
search alone, and with choosing them within the budget, counted by the model's tokenizer;
goal <= 50 ms once the chat's index is built, whose one-off build is shown apart), and the
prompt tokens each question's passages take (goal <= `document_tokens`, here a third of the
default window). Then the OCR of a 1280x720 screenshot of English and Chinese text (the
model's first load shown apart), best of `--repeat`.

    python bench/documents.py
    python bench/documents.py --pages 400 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.core.chats import ChatRef  # noqa: E402
from bot.core.prompt import Segment  # noqa: E402
from bot.models.demo import find_demo_model  # noqa: E402
from bot.ops.runtime import open_runtime  # noqa: E402
from bot.reading.context import passages_block  # noqa: E402
from bot.reading.ocr import ImageReader  # noqa: E402
from bot.reading.retrieval import PassageIndex  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from bot.store import documents  # noqa: E402
from bot.store import repository as repo  # noqa: E402
from tests.reading.files import text_image, text_pdf  # noqa: E402

CHAT = ChatRef(1, "private", "reader")
WORDS = ("llama", "alpaca", "wool", "meadow", "shearing", "herd", "grazes", "quietly", "hills",
         "valley", "farmer", "fence", "winter", "spring", "market", "price", "feed", "barn")
SCREEN = [
    "Traceback (most recent call last):",
    '  File "/srv/app/db.py", line 42, in connect',
    "psycopg.OperationalError: connection refused",
    "Is the server running on host localhost and accepting",
    "TCP/IP connections on port 5432?",
    "数据库连接失败，请检查配置文件和端口。",
    "错误代码：E1045  时间：2026-12-07 08:15:32",
]


def page_text(n: int) -> str:
    """About 2,000 characters of sentences, with page `n`'s own fact."""
    lines = [f"Chapter {n}"]
    for s in range(24):
        words = [WORDS[(n * 31 + s * 7 + k * 3) % len(WORDS)] for k in range(12)]
        lines.append(" ".join(words).capitalize() + ".")
    lines.insert(12, f"The herd of valley {n} counts {n * 3 + 7} animals and its code is "
                     f"K{n:03d}X.")
    return "\n".join(lines)


async def bench_document(pages: int, questions: int) -> None:
    with tempfile.TemporaryDirectory() as data:
        settings = load_settings(None, data=Path(data), model=find_demo_model(),
                                 metrics_listen="")
        async with open_runtime(settings) as runtime:
            service = runtime.service
            pdf = text_pdf([page_text(n) for n in range(1, pages + 1)])
            started = time.perf_counter()
            taken = await service.documents.take(CHAT, "book.pdf", "application/pdf", pdf)
            ingest = time.perf_counter() - started
            print(f"document: {pages} pages, {len(pdf) / 1e6:.1f} MB PDF, {taken.words} words")
            print(f"ingest (text layer, passages, stored): {ingest * 1000:.0f} ms")
            params = await service.chat_settings.params(CHAT)
            budget = service.documents.budget(params)
            engine = service.running_model.engine
            async with runtime.sessions() as session:
                chat = await repo.get_or_create_chat(session, CHAT)
                stored = await documents.passages_of(session, [taken.id])
                started = time.perf_counter()
                index = PassageIndex([p.text for p in stored])
                print(f"the chat's index of {len(stored)} passages, built once (at its first "
                      f"question): {(time.perf_counter() - started) * 1000:.0f} ms")
                await service.documents.passages_for(session, chat, "warm up", params)
                searches, choices, tokens, found = [], [], [], 0
                for q in range(questions):
                    page = 1 + (q * 37) % pages
                    question = f"How many animals does the herd of valley {page} count?"
                    started = time.perf_counter()
                    index.search(question)
                    searches.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    chosen = await service.documents.passages_for(session, chat, question,
                                                                   params)
                    choices.append(time.perf_counter() - started)
                    block = passages_block(chosen)
                    tokens.append(await engine.count_tokens((Segment(block, False),)))
                    found += f"counts {page * 3 + 7} animals" in block
            print(f"retrieval over {questions} questions: BM25 search median "
                  f"{statistics.median(searches) * 1000:.1f} ms (max "
                  f"{max(searches) * 1000:.1f}); with choosing within the budget median "
                  f"{statistics.median(choices) * 1000:.1f} ms (max {max(choices) * 1000:.1f})")
            print(f"prompt tokens of a question's passages: median {statistics.median(tokens):.0f}"
                  f", max {max(tokens)} (document_tokens {budget}); the page asked about found "
                  f"for {found} of {questions} questions")


def bench_ocr(repeat: int) -> None:
    shot = text_image(SCREEN, size=(1280, 720), font_size=34)
    reader = ImageReader(max_pixels=load_settings(None).image_max_pixels)
    started = time.perf_counter()
    first = reader.read(shot)
    print(f"OCR of a 1280x720 screenshot, first (model load included): "
          f"{time.perf_counter() - started:.2f} s, {len(first.lines)} lines")
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        found = reader.read(shot)
        times.append(time.perf_counter() - started)
    print(f"OCR of a 1280x720 screenshot: best {min(times):.2f} s, median "
          f"{statistics.median(times):.2f} s of {repeat}")
    for line in found.lines:
        print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(bench_document(args.pages, args.questions))
    bench_ocr(args.repeat)


if __name__ == "__main__":
    main()
