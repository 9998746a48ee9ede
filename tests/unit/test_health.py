"""The operator's endpoint: /healthz answers for the event loop, /readyz lists what is missing,
/metrics is Prometheus' text format."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.engine.base import Finished
from bot.errors import ConfigError
from bot.ops.health import HealthServer, check_ready
from bot.metrics import Metrics
from bot.settings import load_settings


def test_metrics_listen_is_host_and_port_or_empty() -> None:
    assert load_settings(None).metrics_address == ("127.0.0.1", 9464)
    assert load_settings(None, metrics_listen="[::1]:80").metrics_address == ("::1", 80)
    assert load_settings(None, metrics_listen="").metrics_address is None
    for bad in ("9464", "host:", "host:99999", "host:x"):
        with pytest.raises(ConfigError, match="metrics_listen"):
            load_settings(None, metrics_listen=bad)


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def test_the_endpoints_answer_from_their_own_thread() -> None:
    metrics = Metrics()
    problems: list[str] = []

    async def ready() -> list[str]:
        return list(problems)

    server = HealthServer(("127.0.0.1", 0), metrics=metrics, loop=asyncio.get_running_loop(),
                          ready=ready)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).text == "ready\n"
            problems.append("the database does not answer")
            answer = await client.get("/readyz")
            assert answer.status_code == 503 and "database" in answer.text
            metrics.reply_finished(Finished(reason="eos", text="hi", n_prompt_tokens=30,
                                            n_evaluated=10, n_generated=5, seconds=1.0), 0.2)
            metrics.bot_api_call("sendMessage", 200)
            metrics.bot_api_call("editMessageText", 429)
            values = scrape((await client.get("/metrics")).text)
            assert values[("alpaca_bot_replies_total", (("outcome", "complete"),))] == 1
            assert values[("alpaca_bot_replies_total", (("outcome", "failed"),))] == 0
            assert values[("alpaca_bot_generated_tokens_total", ())] == 5
            assert values[("alpaca_bot_prompt_tokens_evaluated_total", ())] == 10
            assert values[("alpaca_bot_prompt_tokens_cached_total", ())] == 20
            assert values[("alpaca_bot_time_to_first_token_seconds_count", ())] == 1
            assert values[("alpaca_bot_bot_api_calls_total",
                           (("method", "editMessageText"), ("result", "429")))] == 1
            assert values[("alpaca_bot_bot_api_flood_bans_total",
                           (("method", "editMessageText"),))] == 1
            assert (await client.get("/nothing")).status_code == 404
    finally:
        server.stop()


def test_healthz_fails_when_the_event_loop_is_stuck() -> None:
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def stuck() -> None:
        started.set()
        time.sleep(3)  # a callback that never yields: the loop cannot run anything else

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def never() -> list[str]:
        return []

    server = HealthServer(("127.0.0.1", 0), metrics=Metrics(), loop=loop, ready=never)
    server.start()
    try:
        loop.call_soon_threadsafe(stuck)
        started.wait(2)
        answer = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
        assert answer.status_code == 503 and "event loop" in answer.text
    finally:
        server.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def test_readiness_names_each_problem() -> None:
    metrics = Metrics()

    async def database_down() -> None:
        raise ConnectionRefusedError("no server")

    async def bot_api_down() -> object:
        raise OSError("unreachable")

    problems = await check_ready(engine_ready=lambda: ["every model server is down"],
                                 database=database_down, metrics=metrics, ask_bot_api=bot_api_down)
    assert problems[0] == "every model server is down"
    assert "database" in problems[1] and "Bot API" in problems[2]

    async def fine() -> None:
        return None

    metrics.bot_api_call("getUpdates", 200)  # answered just now: no need to ask
    assert await check_ready(engine_ready=list, database=fine, metrics=metrics,
                             ask_bot_api=bot_api_down) == []
