"""Fixtures that run the bot under test: real Telegram wiring, real SQLite, the loopback fake
Bot API (loaded for every test package by tests/conftest.py).

A bot test fails when the bot crashes, when it does not stop within STOP_TIMEOUT, and when it logs
an error the test did not declare with `@pytest.mark.log_errors(pattern, ...)`."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from bot.ops.runtime import Runtime, open_runtime
from bot.settings import Settings
from bot.telegram.app import run_telegram
from bot.telegram.flood import FloodGate
from tests.fakebotapi import FakeBotAPI
from tests.fakeengine import ScriptedEngine

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"
)

STOP_TIMEOUT = 30.0
"""How long a stopping bot may take; the bot's own shutdown is bounded well below it."""
LEFTOVER_TIMEOUT = 10.0
"""How long a task left behind by the stopped bots may take to end once cancelled."""
LOG_ERRORS_MARKER = "log_errors"
EVERY_TEST_ALLOWS = (
    # The bot stops by cancelling the replies in progress (they are redone at the next start);
    # one cancelled inside a database call leaves SQLAlchemy's pool a connection whose rollback
    # is cancelled too, which it logs as an ERROR and discards. Nothing is lost, but the log
    # line is real: shielding that rollback from the cancellation would remove it.
    r"(?s)^ERROR sqlalchemy\.pool\.impl\.\w+: Exception during reset or similar\n.*"
    r"asyncio\.exceptions\.CancelledError$",
)
"""Errors no bot test fails on, each with its reason."""


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
            task, self._task = self._task, None
            task.result()  # the start failed: raised here, to the test, and only here
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
        """Stop the bot as SIGTERM does; its crash, or a shutdown that hangs, is raised here."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, timeout=STOP_TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"the bot did not stop within {STOP_TIMEOUT:.0f} s") from None


async def stop_all(runners: Sequence[BotRunner]) -> None:
    """Stop every runner, then raise the first failure (each bot is stopped whatever it is)."""
    failures: list[BaseException] = []
    for runner in runners:
        try:
            await runner.stop()
        except Exception as failure:
            failures.append(failure)
    if failures:
        raise failures[0]


async def cancel_leftovers() -> None:
    """Fail on tasks still running after the bots stopped (a bot's stop cancels everything it
    started), naming them; they are cancelled first, and one that does not end within
    LEFTOVER_TIMEOUT is named with its stack: a task that swallows its cancellation would
    otherwise hang the test's teardown with no word on which one it is."""
    current = asyncio.current_task()
    left = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    if not left:
        return
    for task in left:
        task.cancel()
    _, pending = await asyncio.wait(left, timeout=LEFTOVER_TIMEOUT)
    lines = []
    for task in left:
        frames = "".join(
            f"\n    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
            for frame in task.get_stack()
        ) if task in pending else ""
        state = "IGNORED ITS CANCELLATION" if task in pending else "cancelled"
        lines.append(f"{task.get_name()} {task.get_coro()!r} ({state}){frames}")
    raise AssertionError("tasks left running after the bot stopped:\n" + "\n".join(lines))


class ErrorRecords(logging.Handler):
    """Keeps every record of level ERROR and above."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def bot_log(request: pytest.FixtureRequest) -> Iterator[ErrorRecords]:
    """The errors logged during a bot test; at its end, any its `log_errors` marker does not
    allow (a regular expression searched in the record's text and traceback) fails it."""
    handler = ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
    allowed = [re.compile(pattern) for pattern in EVERY_TEST_ALLOWS] + [
        re.compile(pattern)
        for marker in request.node.iter_markers(LOG_ERRORS_MARKER) for pattern in marker.args
    ]
    unexpected = [
        text for text in map(handler.format, handler.records)
        if not any(pattern.search(text) for pattern in allowed)
    ]
    if unexpected:
        pytest.fail(
            "the bot logged errors this test does not expect (declare expected ones with "
            f"@pytest.mark.{LOG_ERRORS_MARKER}(pattern)):\n" + "\n".join(unexpected),
            pytrace=False,
        )


@dataclass(frozen=True)
class GateCall:
    """A Bot API call the bot let out through a chat's flood gate: when (its own clock), and
    whether it keeps the gate's spacing (text shown; a chat action does not)."""

    at: float
    spaced: bool
    gate: FloodGate


@pytest.fixture
def gate_calls(monkeypatch: pytest.MonkeyPatch) -> list[GateCall]:
    """Every call of a bot test through a flood gate, in order. When calls *leave* is what the
    bot controls; when they arrive at the fake also depends on how loaded the machine is."""
    calls: list[GateCall] = []
    let_out = FloodGate.call

    async def call(gate: FloodGate, make: Callable[[], Awaitable[Any]], *, spacing: bool = True,
                   counts: bool = True) -> Any:
        async def timed() -> Any:
            calls.append(GateCall(time.monotonic(), spacing and counts, gate))
            return await make()

        return await let_out(gate, timed, spacing=spacing, counts=counts)

    monkeypatch.setattr(FloodGate, "call", call)
    return calls


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
async def run_bot(  # type: ignore[no-untyped-def]
    fake: FakeBotAPI, bot_settings, bot_log: ErrorRecords
) -> AsyncIterator[Any]:
    runners: list[BotRunner] = []

    async def start(engine: Any, load: Any = None, **values: Any) -> BotRunner:
        runner = BotRunner(fake, bot_settings(**values), engine, load)
        runners.append(runner)
        return await runner.start()

    yield start
    await stop_all(runners)
    await cancel_leftovers()
