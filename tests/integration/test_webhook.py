"""Webhook mode end to end: the fake Bot API POSTs updates to the bot's own webhook server.

The bot listens on a free loopback port; its webhook_url is plain http to that port, which the
fake accepts for loopback only (Telegram itself wants HTTPS: a TLS proxy goes in front).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import socket
import time

import pytest
from sqlalchemy import select
from telegram import Bot
from telegram.error import BadRequest, Conflict, RetryAfter

from bot.errors import ConfigError
from bot.store.database import sessions
from bot.store.schema import TurnRow
from tests.fakebotapi import (
    HTTPS_REQUIRED,
    WEBHOOK_ACTIVE,
    WEBHOOK_PORT_FORBIDDEN,
    FakeBotAPI,
    texts,
)
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

SECRET = "alpaca_webhook-Secret_0123456789"


@pytest.fixture
def database_kind() -> str:
    """Webhook delivery does not depend on the database: SQLite only."""
    return "sqlite"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def listening(port: int) -> None:
    """Wait for the bot's webhook server: setWebhook is called before it listens."""
    deadline = time.monotonic() + 10
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
        else:
            writer.close()
            await writer.wait_closed()
            return


async def post(fake: FakeBotAPI, update: dict, **kwargs: object) -> int | None:
    """fake.post_to_webhook blocks; the bot's server answers on this very loop."""
    return await asyncio.to_thread(fake.post_to_webhook, update, **kwargs)  # type: ignore[arg-type]


def webhook_values(port: int, **values: object) -> dict[str, object]:
    return {
        "webhook_url": f"http://127.0.0.1:{port}/alpaca/hook",
        "webhook_listen": f"127.0.0.1:{port}",
        **values,
    }


async def stored_texts(runner) -> list[str]:  # type: ignore[no-untyped-def]
    async with sessions(runner.runtime.database)() as session:
        rows = (await session.execute(select(TurnRow).order_by(TurnRow.id))).scalars()
        return [row.text for row in rows]


async def test_a_message_delivered_to_the_webhook_is_answered(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    port = free_port()
    runner = await run_bot(engine, **webhook_values(port, webhook_secret=SECRET))
    [set_webhook] = fake.requests("setWebhook")
    assert set_webhook.params["url"] == f"http://127.0.0.1:{port}/alpaca/hook"
    assert set_webhook.params["secret_token"] == SECRET
    assert set_webhook.params["allowed_updates"] == ["message", "callback_query", "my_chat_member"]
    assert fake.webhook_info()["url"] == set_webhook.params["url"]

    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    engine.enqueue("Llamas hum.")
    update = fake.send_text(chat, alice, "What sound does a llama make?")
    await fake.wait_for(lambda: texts(fake, chat) == ["Llamas hum."], timeout=10)

    assert "What sound does a llama make?" in engine.prompts()[0]
    delivered = [d for d in fake.deliveries() if d.status == 200]
    assert delivered and fake.pending_updates() == []
    assert update["message_id"] in [m.message_id for m in fake.messages(chat)]
    assert fake.requests("getUpdates") == []  # nothing was polled
    assert await stored_texts(runner) == ["What sound does a llama make?", "Llamas hum."]


async def test_a_forged_update_gets_403_and_reaches_no_handler(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    port = free_port()
    # No secret configured: the bot makes one for this run and gives it to setWebhook.
    runner = await run_bot(engine, **webhook_values(port))
    secret = fake.requests("setWebhook")[0].params["secret_token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,256}", secret)
    await listening(port)

    mallory = fake.user("Mallory", "mallory")
    chat = fake.private_chat(mallory)
    for header in (None, "wrong-secret", secret[:-1]):
        forged = fake.forged_update(chat, mallory, f"forged with {header!r}")
        assert await post(fake, forged, secret=header) == 403
    # Nothing but the configured path is served.
    url = f"http://127.0.0.1:{port}/elsewhere"
    assert await post(fake, fake.forged_update(chat, mallory, "x"), secret=secret, url=url) == 404

    engine.enqueue("A genuine answer.")
    fake.send_text(chat, mallory, "a genuine question")
    await fake.wait_for(lambda: texts(fake, chat) == ["A genuine answer."], timeout=10)
    # The genuine update came after the forged ones and has been handled: so have they, if at all.
    assert len(engine.history) == 1 and "forged" not in engine.prompts()[0]
    assert await stored_texts(runner) == ["a genuine question", "A genuine answer."]
    assert texts(fake, chat) == ["A genuine answer."]


async def test_a_restart_in_polling_mode_deletes_the_webhook_and_polls(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    webhook_bot = await run_bot(engine, **webhook_values(port, webhook_secret=SECRET))
    await webhook_bot.stop()
    # Stopping leaves the webhook set: Telegram keeps the updates that come meanwhile.
    assert fake.webhook_info()["url"]
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    fake.send_text(chat, alice, "are you there?")
    await fake.wait_for(lambda: fake.webhook_info().get("last_error_message"), timeout=5)
    assert fake.webhook_info()["pending_update_count"] == 1

    caplog.set_level(logging.INFO, logger="bot.telegram.app")
    engine.enqueue("Back, and polling.")
    await run_bot(engine)
    await fake.wait_for(lambda: texts(fake, chat) == ["Back, and polling."], timeout=10)

    assert len(fake.requests("deleteWebhook")) == 1 and fake.webhook_info()["url"] == ""
    deleted = fake.requests("deleteWebhook")[0].at
    assert [r for r in fake.requests("getUpdates") if r.at > deleted and r.status == 200]
    notes = [r.getMessage() for r in caplog.records if "deleting the webhook" in r.getMessage()]
    assert notes == [f"deleting the webhook http://127.0.0.1:{port}/alpaca/hook: updates are "
                     "polled from now on"]


async def test_a_webhook_telegram_refuses_stops_the_start_with_one_line(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    port = free_port()
    values = webhook_values(port, webhook_url="http://bot.example.org/hook")
    with pytest.raises(ConfigError, match="(?i)Telegram refused the webhook URL http://bot.example.org"
                                          "/hook: bad webhook: an https url must be provided"):
        await run_bot(engine, **values)


async def test_a_busy_webhook_port_stops_the_start_with_one_line(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The server listens first: Telegram never learns a URL nothing answers at.
        with pytest.raises(ConfigError, match=f"cannot listen for the webhook on 127.0.0.1:{port}"):
            await run_bot(engine, **webhook_values(port))
    assert fake.requests("setWebhook") == []


async def raw_post(port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    """Send a POST's head (and `body`), then read what comes back within 5 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(f"POST /alpaca/hook HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1000), timeout=5)
    finally:
        writer.close()


async def test_a_request_is_judged_by_its_headers_before_its_body_is_read(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    port = free_port()
    await run_bot(engine, **webhook_values(port, webhook_secret=SECRET))
    await listening(port)
    json_body = {"Content-Type": "application/json"}
    # Announcing 50 MB without the secret: refused at once, nothing waited for.
    answer = await raw_post(port, {**json_body, "Content-Length": str(50 << 20),
                                   "X-Telegram-Bot-Api-Secret-Token": "guess"})
    assert answer.startswith(b"HTTP/1.1 403")
    # With the secret, a body larger than an update can be is refused before it is read.
    answer = await raw_post(port, {**json_body, "Content-Length": str(2 << 20),
                                   "X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert answer.startswith(b"HTTP/1.1 413") or answer == b""
    chunked = {**json_body, "Transfer-Encoding": "chunked", "X-Telegram-Bot-Api-Secret-Token": SECRET}
    piece = b"x" * (256 << 10)
    answer = await raw_post(port, chunked, (b"%x\r\n" % len(piece) + piece + b"\r\n") * 5)
    assert not answer.startswith(b"HTTP/1.1 200")
    # Not JSON, or not an update: 400, and nothing reaches a handler.
    answer = await raw_post(port, {**json_body, "Content-Length": "5",
                                   "X-Telegram-Bot-Api-Secret-Token": SECRET}, b"nope!")
    assert answer.startswith(b"HTTP/1.1 400")
    # A genuine update still goes through.
    alice = fake.user("Alice", "alice")
    chat = fake.private_chat(alice)
    engine.enqueue("Still here.")
    fake.send_text(chat, alice, "hello?")
    await fake.wait_for(lambda: texts(fake, chat) == ["Still here."], timeout=10)
    assert len(engine.history) == 1


async def test_the_secret_is_compared_in_constant_time(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.telegram import webhook

    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return constant_time(a, b)

    monkeypatch.setattr(webhook.hmac, "compare_digest", compare_digest)
    port = free_port()
    await run_bot(engine, **webhook_values(port, webhook_secret=SECRET))
    await listening(port)
    mallory = fake.user("Mallory", "mallory")
    chat = fake.private_chat(mallory)
    assert await post(fake, fake.forged_update(chat, mallory, "x"), secret="nope") == 403
    assert compared == [(b"nope", SECRET.encode())]


# -- the fake's rules, as Telegram's --------------------------------------------------------------


@pytest.fixture
async def bot(fake: FakeBotAPI):  # type: ignore[no-untyped-def]
    async with Bot(fake.token, base_url=f"{fake.base_url}/bot") as bot:
        yield bot


async def test_set_webhook_follows_telegrams_rules(bot: Bot, fake: FakeBotAPI) -> None:
    fake.set_webhook_interval = 0  # one a second, checked last
    for url, text in (
        ("http://bot.example.org/hook", HTTPS_REQUIRED),
        ("https://bot.example.org:8080/hook", WEBHOOK_PORT_FORBIDDEN),
        ("not a url", "Bad Request: invalid webhook URL specified"),
    ):
        with pytest.raises(BadRequest) as refused:
            await bot.set_webhook(url)
        assert refused.value.message.lower() == text.removeprefix("Bad Request: ").lower()
    for secret, text in (("a b", "unallowed characters"), ("ключ", "unallowed characters"),
                         ("x" * 257, "is too long")):
        with pytest.raises(BadRequest, match=text):
            await bot.set_webhook("https://bot.example.org/hook", secret_token=secret)
    assert fake.webhook_info()["url"] == ""

    fake.set_webhook_interval = 1.0
    assert await bot.set_webhook("https://bot.example.org:8443/hook", secret_token="x" * 256)
    with pytest.raises(RetryAfter):
        await bot.set_webhook("https://bot.example.org/other")
    with pytest.raises(Conflict) as conflict:
        await bot.get_updates()
    assert conflict.value.message == WEBHOOK_ACTIVE
    info = await bot.get_webhook_info()
    assert info.url == "https://bot.example.org:8443/hook" and info.max_connections == 40
    assert await bot.delete_webhook()
    assert await bot.get_updates() == ()


async def test_updates_go_to_the_webhook_with_the_secret_until_it_answers(
    bot: Bot, fake: FakeBotAPI
) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    received: list[tuple[str | None, bytes]] = []
    answers = [503, 200]

    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers.get("X-Telegram-Bot-Api-Secret-Token"), body))
            self.send_response(answers.pop(0))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Webhook)
    Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        alice = fake.user("Alice", "alice")
        chat = fake.private_chat(alice)
        await bot.set_webhook(f"http://127.0.0.1:{server.server_port}/hook", secret_token=SECRET)
        message = fake.send_text(chat, alice, "hello")
        await fake.wait_for(lambda: len(received) == 2 and not fake.pending_updates())
    finally:
        server.shutdown()
        server.server_close()
    assert [secret for secret, _ in received] == [SECRET, SECRET]
    assert received[0][1] == received[1][1] and b'"text": "hello"' in received[1][1]
    assert [d.status for d in fake.deliveries()] == [503, 200]
    assert fake.deliveries()[0].error == "Wrong response from the webhook: 503 Service Unavailable"
    assert message["text"] == "hello"
