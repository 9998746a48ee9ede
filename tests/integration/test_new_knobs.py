"""/min_p and /repeat_last_n as a user meets them: private chats, groups (admins only), the
console, the `alpaca-bot chat` flags, stored per chat across a restart, bad values refused."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from bot.chat.commands import BY_NAME
from bot.console import CONSOLE_CHAT, ConsoleFront, handle_command
from bot.ops.runtime import open_runtime
from tests.fakebotapi import FakeBotAPI, texts
from tests.fakeengine import ScriptedEngine

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


async def test_private_chat_sets_both_and_they_reach_the_engine_after_a_restart(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    runner = await run_bot(engine)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    fake.send_text(chat, alice, "/min_p 0.2")
    await fake.wait_for(lambda: texts(fake, chat) == ["--min-p set to 0.2 for this chat."], timeout=10)
    fake.send_text(chat, alice, "/repeat_last_n 256")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=10)
    assert texts(fake, chat)[-1] == "--repeat-last-n set to 256 for this chat."
    fake.send_text(chat, alice, "/min_p")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 3, timeout=10)
    assert texts(fake, chat)[-1].startswith("--min-p 0.2 — ")
    assert "Range 0–1, default 0.05." in texts(fake, chat)[-1]
    await runner.stop()

    again = ScriptedEngine()
    await run_bot(again)
    fake.send_text(chat, alice, "/settings")
    await fake.wait_for(lambda: texts(fake, chat)[-1].startswith("Model:"), timeout=10)
    shown = texts(fake, chat)[-1]
    assert "/min_p (--min-p) = 0.2" in shown and "/repeat_last_n (--repeat-last-n) = 256" in shown
    again.enqueue("Hi.")
    fake.send_text(chat, alice, "Hello")
    await fake.wait_for(lambda: "Hi." in texts(fake, chat), timeout=10)
    sampling = again.history[0].sampling
    assert sampling.min_p == pytest.approx(0.2) and sampling.repeat_last_n == 256


async def test_minus_one_looks_back_over_the_whole_context(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    await run_bot(engine)
    bob = fake.user("Bob")
    chat = fake.private_chat(bob)
    fake.send_text(chat, bob, "/ctx 1024")
    fake.send_text(chat, bob, "/repeat_last_n -1")
    await fake.wait_for(lambda: len(texts(fake, chat)) == 2, timeout=10)
    engine.enqueue("ok")
    fake.send_text(chat, bob, "hi")
    await fake.wait_for(lambda: "ok" in texts(fake, chat), timeout=10)
    assert engine.history[0].sampling.repeat_last_n == 1024


async def test_groups_let_only_admins_change_them_and_bad_values_get_the_usage(
    fake: FakeBotAPI, engine: ScriptedEngine, run_bot
) -> None:
    await run_bot(engine)
    group = fake.group_chat("Knobs")
    owner, member = fake.user("Olga", "olga"), fake.user("Max", "max")
    fake.set_admins(group, [owner["id"]])
    fake.send_text(group, member, "/min_p 0.5")
    await fake.wait_for(lambda: len(texts(fake, group)) == 1, timeout=10)
    assert texts(fake, group)[-1] == "Only the group's admins can change settings."
    fake.send_text(group, member, "/repeat_last_n@alpaca_test_bot 10")
    await fake.wait_for(lambda: len(texts(fake, group)) == 2, timeout=10)
    assert texts(fake, group)[-1] == "Only the group's admins can change settings."
    fake.send_text(group, owner, "/min_p 1.5")
    await fake.wait_for(lambda: len(texts(fake, group)) == 3, timeout=10)
    assert texts(fake, group)[-1] == (
        "1.5 is out of range. Usage: /min_p VALUE (float, 0–1): drop tokens less likely than "
        "this share of the most likely one; 0 disables"
    )
    fake.send_text(group, owner, "/repeat_last_n many")
    await fake.wait_for(lambda: len(texts(fake, group)) == 4, timeout=10)
    assert texts(fake, group)[-1].startswith(
        "'many' is not a valid value. Usage: /repeat_last_n VALUE (int, -1–"
    )
    assert "\n" not in texts(fake, group)[-1]
    fake.send_text(group, owner, "/repeat_last_n@alpaca_test_bot 32")
    await fake.wait_for(lambda: len(texts(fake, group)) == 5, timeout=10)
    assert texts(fake, group)[-1] == "--repeat-last-n set to 32 for this chat."
    fake.send_text(group, member, "/repeat_last_n")  # everyone may read it
    await fake.wait_for(lambda: len(texts(fake, group)) == 6, timeout=10)
    assert texts(fake, group)[-1].startswith("--repeat-last-n 32 — ")


async def test_the_menu_and_help_list_them(fake: FakeBotAPI, engine: ScriptedEngine, run_bot) -> None:
    await run_bot(engine)
    menu = fake.requests("setMyCommands")[-1].params["commands"]
    names = [item["command"] for item in menu]
    assert {"min_p", "repeat_last_n"} <= set(names)
    alice = fake.user("Alice")
    chat = fake.private_chat(alice)
    fake.send_text(chat, alice, "/help")
    await fake.wait_for(lambda: texts(fake, chat), timeout=10)
    assert "/min_p [VALUE] — min-p sampling (--min-p)" in texts(fake, chat)[0]
    assert "/repeat_last_n [VALUE] — " in texts(fake, chat)[0]


async def test_the_console_runs_them_from_the_same_table(make_settings) -> None:  # type: ignore[no-untyped-def]
    async with open_runtime(make_settings(), engine=ScriptedEngine()) as runtime:
        service = runtime.service
        front = ConsoleFront(service, io.StringIO(), color=False)
        assert await handle_command(front, service, "/min_p 0.1") == "--min-p set to 0.1 for this chat."
        assert await handle_command(front, service, "/repeat_last_n 0") == (
            "--repeat-last-n set to 0 for this chat."
        )
        bad = await handle_command(front, service, "/min_p -1")
        assert bad is not None and bad.startswith("-1 is out of range. Usage: /min_p VALUE")
        params = await service.chat_settings.params(CONSOLE_CHAT)
        assert (params.min_p, params.repeat_last_n) == (pytest.approx(0.1), 0)
        help_text = await handle_command(front, service, "/help")
        assert help_text is not None and "/repeat_last_n [VALUE]" in help_text
        assert await handle_command(front, service, "/quantize") == "/quantize works in Telegram only."
        assert "quit" in BY_NAME
        assert await handle_command(front, service, "/quit") is None and front.quitting


def test_chat_flags_are_stored_for_the_console_chat(
    make_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """`alpaca-bot chat --min-p 0.3 --repeat-last-n 128` stores both like the commands do."""
    from bot import cli
    from bot.cli.running import _run_console

    seen: dict[str, object] = {}

    async def fake_console(service, **_kwargs) -> None:  # type: ignore[no-untyped-def]
        params = await service.chat_settings.params(CONSOLE_CHAT)
        seen.update(min_p=params.min_p, repeat_last_n=params.repeat_last_n, temp=params.temp)

    settings = make_settings()
    monkeypatch.setattr("bot.console.run_console", fake_console)
    import bot.ops.runtime  # the CLI imports it when the command runs

    real_open = bot.ops.runtime.open_runtime
    monkeypatch.setattr(
        bot.ops.runtime, "open_runtime", lambda s, engine=None, **kw: real_open(s, ScriptedEngine(), **kw)
    )
    args = cli.build_parser().parse_args(
        ["chat", "--min-p", "0.3", "--repeat-last-n", "128", "--temp", "0.5"]
    )
    assert asyncio.run(_run_console(settings, color=False, flags=args)) == 0
    assert seen == {"min_p": pytest.approx(0.3), "repeat_last_n": 128, "temp": pytest.approx(0.5)}
