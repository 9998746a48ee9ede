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
from bot.metrics import Metrics
from bot.ops.health import HealthServer, check_ready
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


# -- bounded work, quiet answers, the metrics token ---------------------------------------------


async def test_slow_readiness_checks_do_not_pile_up_threads() -> None:
    running = most = 0
    release = asyncio.Event()

    async def slow() -> list[str]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return []

    server = HealthServer(("127.0.0.1", 0), metrics=Metrics(), loop=asyncio.get_running_loop(),
                          ready=slow)
    server.start()
    before = threading.active_count()
    url = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=15) as client:
            waiting = [asyncio.create_task(client.get("/readyz")) for _ in range(20)]
            await asyncio.sleep(0.5)
            # However many wait, a few threads answer, one check runs, and /healthz and
            # /metrics are still answered meanwhile.
            assert threading.active_count() - before <= 4
            assert running == 1
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200
            release.set()
            answers = await asyncio.gather(*waiting)
        assert {a.status_code for a in answers} <= {200, 503}
        assert sum(a.status_code == 200 for a in answers) >= 1
        assert most == 1  # never two checks at a time
    finally:
        server.stop()


async def test_a_connection_beyond_the_workers_is_refused_at_once() -> None:
    loop = asyncio.get_running_loop()

    async def ready() -> list[str]:
        return []

    server = HealthServer(("127.0.0.1", 0), metrics=Metrics(), loop=loop, ready=ready)
    server.start()
    idle = []
    try:
        for _ in range(4):  # connections that never send a request hold a worker each
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            idle.append(writer)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as client:
            try:
                answer = await client.get(f"http://127.0.0.1:{server.port}/healthz")
                assert answer.status_code == 503
            except httpx.TransportError:
                pass  # refused before the request was read: as good
        assert time.monotonic() - started < 2
    finally:
        for writer in idle:
            writer.close()
        server.stop()


async def test_not_ready_names_the_problem_and_logs_the_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def database_down() -> None:
        raise ConnectionRefusedError("connect to 10.0.0.7:5432 as bot:hunter2 refused")

    async def ready() -> list[str]:
        return await check_ready(engine_ready=list, database=database_down, metrics=Metrics(),
                                 ask_bot_api=None)

    server = HealthServer(("127.0.0.1", 0), metrics=Metrics(), loop=asyncio.get_running_loop(),
                          ready=ready)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            answer = await client.get("/readyz")
    finally:
        server.stop()
    assert answer.status_code == 503
    assert answer.text == "not ready: the database does not answer\n"
    assert "10.0.0.7" in caplog.text and "hunter2" not in answer.text


async def test_the_metrics_token_is_required_when_set() -> None:
    async def ready() -> list[str]:
        return []

    token = "s3cret-token-for-the-scraper"
    server = HealthServer(("127.0.0.1", 0), metrics=Metrics(), loop=asyncio.get_running_loop(),
                          ready=ready, token=token)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            refused = await client.get("/metrics")
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            assert "alpaca_bot" not in refused.text
            for wrong in ("Bearer nope", f"Basic {token}", f"Bearer {token}x", token):
                answer = await client.get("/metrics", headers={"Authorization": wrong})
                assert answer.status_code == 401, wrong
            good = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert good.status_code == 200 and "alpaca_bot_replies_total" in good.text
            # The probes stay open: an orchestrator asks them without a token.
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
    finally:
        server.stop()


def test_the_metrics_token_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(None).metrics_token is None
    monkeypatch.setenv("ALPACA_BOT_METRICS_TOKEN", "from-the-environment-1234")
    from_env = load_settings(None).metrics_token
    assert from_env is not None and from_env.get_secret_value() == "from-the-environment-1234"
    monkeypatch.delenv("ALPACA_BOT_METRICS_TOKEN")
    assert load_settings(None, metrics_token="").metrics_token is None
    token = load_settings(None, metrics_token="a" * 32).metrics_token
    assert token is not None and token.get_secret_value() == "a" * 32
    for bad in ("short", "has a space in it somewhere"):
        with pytest.raises(ConfigError, match="metrics_token"):
            load_settings(None, metrics_token=bad)
