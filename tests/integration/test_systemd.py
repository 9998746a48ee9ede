"""`alpaca-bot run` under systemd: the notify protocol over a socket the test binds, the watchdog,
and the token from $CREDENTIALS_DIRECTORY (LoadCredential=)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.cli import _run_bot, setup_logging
from bot.ops.systemd import SystemdNotifier
from bot.settings import TOKEN_CREDENTIAL, credential_token
from tests.fakebotapi import FakeBotAPI
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

WATCHDOG_USEC = 200_000  # pings every 0.1 s


@pytest.fixture
def database_kind() -> str:
    """The notify protocol does not depend on the database: SQLite only."""
    return "sqlite"


@dataclass(frozen=True)
class Datagram:
    at: float
    lines: tuple[str, ...]


class NotifySocket:
    """The service manager's end: a datagram socket, read by a thread that timestamps each
    message (a thread, so a blocked event loop in the test cannot delay the reading)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.received: list[Datagram] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.received.append(Datagram(time.monotonic(), tuple(data.decode().split("\n"))))

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def with_line(self, line: str) -> list[Datagram]:
        return [d for d in list(self.received) if line in d.lines]

    def statuses(self) -> list[str]:
        return [
            line.removeprefix("STATUS=")
            for d in list(self.received) for line in d.lines if line.startswith("STATUS=")
        ]


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # A short directory of its own: socket paths are limited to 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="notify-"))
    listener = NotifySocket(str(directory / "notify.sock"))
    yield listener
    listener.close()
    (directory / "notify.sock").unlink(missing_ok=True)
    directory.rmdir()


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = SystemdNotifier.from_environment({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.ready("up") is False and notifier.ping() is False


def test_the_watchdog_is_ours_only_when_watchdog_pid_is_us_or_unset() -> None:
    pid = os.getpid()
    base = {"NOTIFY_SOCKET": "/run/notify", "WATCHDOG_USEC": "60000000"}
    assert SystemdNotifier.from_environment(base).watchdog_interval == 30.0
    assert SystemdNotifier.from_environment({**base, "WATCHDOG_PID": str(pid)}).watchdog_interval
    assert SystemdNotifier.from_environment(
        {**base, "WATCHDOG_PID": str(pid + 1)}
    ).watchdog_interval is None
    assert SystemdNotifier.from_environment({**base, "WATCHDOG_USEC": "0"}).watchdog_interval is None
    assert SystemdNotifier.from_environment({**base, "WATCHDOG_USEC": "x"}).watchdog_interval is None


def test_an_abstract_socket_name_starts_with_at() -> None:
    name = f"alpaca-bot-test-{uuid.uuid4().hex}"
    listener = NotifySocket("\0" + name)
    try:
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": f"@{name}"})
        assert notifier.ready("serving\n@bot  (polling)") and notifier.stopping()
        deadline = time.monotonic() + 5
        while len(listener.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        listener.close()
    assert [d.lines for d in listener.received] == [
        ("READY=1", "STATUS=serving @bot (polling)"), ("STOPPING=1",)
    ]


def test_a_missing_socket_is_a_warning_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.ping() is False
    assert "could not notify systemd" in caplog.text


def test_the_token_credential(tmp_path: Path, make_settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    assert credential_token({}) is None
    assert credential_token({"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None  # not passed
    (tmp_path / TOKEN_CREDENTIAL).write_text("123:from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert make_settings().token.get_secret_value() == "123:from-systemd"
    # A token configured anywhere else wins.
    assert make_settings(token="456:configured").token.get_secret_value() == "456:configured"
    monkeypatch.setenv("ALPACA_BOT_TOKEN", "789:env")
    assert make_settings().token.get_secret_value() == "789:env"


async def test_run_under_systemd_notifies_pings_and_takes_the_credential(
    fake: FakeBotAPI,
    make_settings,  # type: ignore[no-untyped-def]
    notify_socket: NotifySocket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / TOKEN_CREDENTIAL).write_text(fake.token + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    settings = make_settings(api_url=f"{fake.base_url}/bot", log_level="DEBUG",
                             edit_interval_private=0.3, access="open")
    assert settings.token is not None and settings.token.get_secret_value() == fake.token

    # When the bot sent each ping, on its own clock: what it controls (when a datagram is read
    # on the other side also depends on how loaded the machine is).
    sent: list[float] = []
    ping = SystemdNotifier.ping

    def timed_ping(notifier: SystemdNotifier) -> bool:
        sent.append(time.monotonic())
        return ping(notifier)

    monkeypatch.setattr(SystemdNotifier, "ping", timed_ping)
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    engine = ScriptedEngine()
    try:
        setup_logging(settings)
        bot = asyncio.create_task(_run_bot(settings, engine=engine))
        [ready] = await fake.wait_for(lambda: notify_socket.with_line("READY=1"), timeout=30,
                                      what="READY=1")
        # Ready means updates arrive: python-telegram-bot's start_polling has deleted any webhook
        # and started its polling task, whose first getUpdates the fake sees.
        assert [r for r in fake.requests("deleteWebhook") if r.status == 200]
        await fake.wait_for(lambda: fake.requests("getUpdates"), what="getUpdates")
        assert notify_socket.statuses()[:3] == [
            "connecting to the Telegram Bot API", "loading the model",
            "serving @alpaca_test_bot (polling)",
        ]
        # The token came from the credential: the fake answers only its own token.
        alice = fake.user("Alice", "alice")
        chat = fake.private_chat(alice)
        engine.enqueue("Hello from systemd.")
        fake.send_text(chat, alice, "hi")
        await fake.wait_for(lambda: [m.text for m in fake.bot_messages(chat)]
                            == ["Hello from systemd."], timeout=10)

        # Pings keep coming, every half of WATCHDOG_USEC ...
        await fake.wait_for(lambda: len(pings_after(notify_socket, ready.at)) >= 5, timeout=5)
        # ... from the event loop itself: while it is blocked, none come.
        blocked_at = time.monotonic()
        time.sleep(0.6)  # noqa: ASYNC251 - blocking the loop on purpose, as a hung bot would
        unblocked_at = time.monotonic()
        await fake.wait_for(lambda: len(pings_after(notify_socket, unblocked_at)) >= 2, timeout=5)
        during = [p for p in pings_after(notify_socket, blocked_at) if p.at < unblocked_at - 0.05]
        assert len(during) <= 1  # at most one already on its way when the loop stopped

        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(bot, timeout=30) == 0
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])

    [stopping] = notify_socket.with_line("STOPPING=1")
    assert stopping.at > ready.at
    # Every ping sent half a watchdog period after the last (never sooner; the loop blocked
    # once), most of them well within the period systemd allows, and every one arrived.
    interval = WATCHDOG_USEC / 2e6
    gaps = [later - earlier for earlier, later in zip(sent, sent[1:], strict=False)]
    assert min(gaps) >= interval - 0.005 and max(gaps) >= 0.5, gaps
    assert sorted(gaps)[len(gaps) // 2] < 2 * interval, gaps
    # The process is gone: no pings after it returned.
    count = len(notify_socket.with_line("WATCHDOG=1"))
    await asyncio.sleep(0.3)
    assert len(notify_socket.with_line("WATCHDOG=1")) == count == len(sent)
    # Never in the log, nor in what systemd heard.
    output = log.getvalue()
    assert "Telegram bot @alpaca_test_bot is running (polling)" in output
    assert fake.token not in output
    assert not [d for d in notify_socket.received if fake.token in "\n".join(d.lines)]


def pings_after(listener: NotifySocket, at: float) -> list[Datagram]:
    return [d for d in listener.with_line("WATCHDOG=1") if d.at > at]
