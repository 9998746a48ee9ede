"""Fixtures that run the bot under test: real Telegram wiring, real SQLite, the loopback fake
Bot API (loaded for every test package by tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bot.ops.runtime import Runtime, open_runtime
from bot.settings import Settings
from bot.telegram.app import run_telegram
from tests.fakebotapi import FakeBotAPI
from tests.fakeengine import ScriptedEngine

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"
)


class BotRunner:
    """Starts and stops the bot like `alpaca-bot run` does, with a given engine."""

    def __init__(
        self, fake: FakeBotAPI, settings: Settings, engine: Any, load: Any = None
    ) -> None:
        self.fake = fake
        self.settings = settings
        self.engine = engine
        self.load = load
        self.runtime: Runtime | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> BotRunner:
        self._stop = asyncio.Event()
        polls = self._receiving()
        self._task = asyncio.create_task(self._main())
        await self.fake.wait_for(
            lambda: self._task.done() or self._receiving() > polls,
            timeout=30, what="the bot to start polling or set its webhook",
        )
        if self._task.done():
            self._task.result()
        return self

    def _receiving(self) -> int:
        """How often the bot began receiving updates: getUpdates calls, webhooks set."""
        webhooks = [r for r in self.fake.requests("setWebhook") if r.status == 200]
        return len(self.fake.requests("getUpdates")) + len(webhooks)

    async def _main(self) -> None:
        load = self.load or (lambda path: ScriptedEngine())
        async with open_runtime(self.settings, engine=self.engine, load=load) as runtime:
            self.runtime = runtime
            self.jobs = runtime.service.jobs
            await run_telegram(self.settings, runtime.service, self._stop, poll_timeout=1)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout=30)
            self._task = None


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as api:
        yield api


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def bot_settings(make_settings, fake: FakeBotAPI):  # type: ignore[no-untyped-def]
    def build(**values: Any) -> Settings:
        values.setdefault("token", fake.token)
        values.setdefault("api_url", f"{fake.base_url}/bot")
        values.setdefault("edit_interval_private", 0.3)
        values.setdefault("edit_interval_group", 0.5)
        values.setdefault("metrics_listen", "")  # on only where a test asks for it
        # Tests not about access talk to the bot as anyone: open to all, unless the test (or
        # its environment) chooses a policy. The product's default stays "pairing".
        if "ALPACA_BOT_ACCESS" not in os.environ:
            values.setdefault("access", "open")
        return make_settings(**values)

    return build


@pytest.fixture
async def run_bot(fake: FakeBotAPI, bot_settings) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    runners: list[BotRunner] = []

    async def start(engine: Any, load: Any = None, **values: Any) -> BotRunner:
        runner = BotRunner(fake, bot_settings(**values), engine, load)
        runners.append(runner)
        return await runner.start()

    yield start
    for runner in runners:
        with contextlib.suppress(Exception):
            await runner.stop()
