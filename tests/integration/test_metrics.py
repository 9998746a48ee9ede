"""The operator's endpoint of a running bot: scraped after replies, the counters moved by the
right amounts; /healthz and /readyz answer; `alpaca-bot doctor` names what is wrong."""

from __future__ import annotations

import io
import socket
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.ops.doctor import run_doctor
from bot.settings import load_settings
from tests.fakebotapi import FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(url + "/metrics")
    assert answer.status_code == 200
    values = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def total(values: dict[Any, float], metric: str, /, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, have), v in values.items() if n == metric and wanted <= set(have))


async def test_counters_move_by_what_the_replies_did(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine(delay=0.02)
    port = free_port()
    await run_bot(engine, metrics_listen=f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        assert (await client.get(url + "/healthz")).text == "ok\n"
        ready = await client.get(url + "/readyz")
        assert ready.status_code == 200, ready.text
    before = await scrape(url)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    engine.enqueue("one two three four five six", "seven eight nine")
    fake.send_text(chat, alice, "count for me")
    await fake.wait_for(lambda: texts(fake, chat) == ["one two three four five six"], timeout=10)
    fake.send_text(chat, alice, "and on")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=10)
    first, second = engine.history
    after = await scrape(url)

    def moved(metric: str, /, **labels: str) -> float:
        return total(after, metric, **labels) - total(before, metric, **labels)

    assert moved("alpaca_bot_replies_total", outcome="complete") == 2
    assert moved("alpaca_bot_replies_total", outcome="failed") == 0
    assert moved("alpaca_bot_generated_tokens_total") == 6 + 3
    n_first = await engine.count_tokens(first.prompt)
    n_second = await engine.count_tokens(second.prompt)
    # The second prompt holds the first prompt and reply: only the rest is evaluated.
    assert moved("alpaca_bot_prompt_tokens_evaluated_total") == n_first + n_second - (n_first + 6)
    assert moved("alpaca_bot_prompt_tokens_cached_total") == n_first + 6
    assert moved("alpaca_bot_time_to_first_token_seconds_count") == 2
    assert moved("alpaca_bot_generation_tokens_per_second_count") == 2
    assert moved("alpaca_bot_bot_api_calls_total", method="sendMessage", result="ok") == 2
    assert total(after, "alpaca_bot_bot_api_calls_total", method="getUpdates", result="ok") >= 1
    assert total(after, "alpaca_bot_model_info", name="scripted") == 1
    assert ("alpaca_bot_queue_length", ()) in after and ("alpaca_bot_slots_busy", ()) in after


async def test_flood_bans_and_failed_replies_are_counted(fake: FakeBotAPI, run_bot: Any) -> None:
    engine = ScriptedEngine(delay=0.05, max_queue=1)
    engine.hang = True
    port = free_port()
    await run_bot(engine, metrics_listen=f"127.0.0.1:{port}", stream_mode="edit")
    url = f"http://127.0.0.1:{port}"
    alice, bob = fake.user("Alice"), fake.user("Bob")
    first, second = fake.private_chat(alice), fake.private_chat(bob)
    fake.fail_next("editMessageText", 429, retry_after=1, chat_id=first)
    engine.enqueue(" ".join(f"w{i}" for i in range(40)))
    fake.send_text(first, alice, "a long one")
    await engine.started.wait()
    fake.send_text(second, bob, "me too")  # the queue holds one: busy
    await fake.wait_for(lambda: texts(fake, second) and "busy" in texts(fake, second)[0],
                        timeout=10)
    await fake.wait_for(lambda: any(r.status == 429 for r in fake.requests("editMessageText")),
                        timeout=20)
    values = await scrape(url)
    assert total(values, "alpaca_bot_bot_api_flood_bans_total", method="editMessageText") == 1
    assert total(values, "alpaca_bot_bot_api_calls_total", method="editMessageText",
                 result="429") == 1
    assert total(values, "alpaca_bot_replies_total", outcome="failed") == 1
    fake.send_text(first, alice, "/stop")
    await fake.wait_for(lambda: texts(fake, first)[0].endswith("stopped"), timeout=10)
    values = await scrape(url)
    assert total(values, "alpaca_bot_replies_total", outcome="stopped") == 1


def test_doctor_says_what_is_wrong_and_how_to_fix_it(fake: FakeBotAPI, tmp_path: Any) -> None:
    good = load_settings(None, token=fake.token, api_url=f"{fake.base_url}/bot",
                         data=tmp_path / "data")
    out = io.StringIO()
    assert run_doctor(good, out) == 0, out.getvalue()
    report = out.getvalue()
    assert "✓ Telegram token: the Bot API knows it as @" in report
    assert "✓ model:" in report and "all checks passed" in report

    bad = load_settings(None, token="123:wrong", api_url=f"{fake.base_url}/bot",
                        data=tmp_path / "data", model=tmp_path / "missing.gguf")
    out = io.StringIO()
    assert run_doctor(bad, out) == 1
    report = out.getvalue()
    assert "✗ model:" in report and "missing.gguf does not exist" in report
    assert "✗ Telegram token: the Bot API rejected the token" in report
    assert report.count("fix:") >= 2 and "2 problems found" in report
    assert "123:wrong" not in report
