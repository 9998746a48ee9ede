"""Subcommands that run the bot: the Telegram bot (`run`), the console chat (`chat`), and
`start`, which picks one by whether a token is configured."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot import __version__
from bot.core.knobs import KNOBS
from bot.errors import UserError
from bot.i18n import N_, SOURCE, _, locale_language, speaking
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.engine.base import Engine

log = logging.getLogger("alpaca_bot")

NO_TOKEN_HINT = N_(
    "No Telegram token is configured, so this is the console chat.\n"
    "To run the Telegram bot: create a bot with @BotFather, then\n"
    "    export ALPACA_BOT_TOKEN=123456:ABC...   (or set `token` in your config file)\n"
    "and start again (`make run` or `alpaca-bot run`)."
)
"""The console's first lines when `start` finds no token (in the console's language)."""


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run_bot(settings))


def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    """`make run`: the Telegram bot when a token is configured, else the console chat."""
    if settings.token is not None:
        return asyncio.run(_run_bot(settings))
    return asyncio.run(_run_console(settings, color=sys.stdout.isatty(), banner=NO_TOKEN_HINT,
                                    language=_console_language(args)))


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run_console(settings, color=args.color, prompt_file=args.file, flags=args,
                                    language=_console_language(args)))


def _console_language(args: argparse.Namespace) -> str:
    chosen = getattr(args, "lang", "auto")  # `alpaca-bot` alone runs start without its flags
    return locale_language() if chosen == "auto" else str(chosen)


async def _run_bot(settings: Settings, *, engine: Engine | None = None) -> int:
    """The Telegram bot until SIGINT/SIGTERM; `engine` serves instead of loading the model.

    Under systemd (Type=notify) it reports its progress, READY once updates arrive, watchdog
    pings from the event loop for as long as it runs, and STOPPING.
    """
    from bot.ops.runtime import open_runtime
    from bot.ops.systemd import SystemdNotifier
    from bot.store.instance_lock import hold_instance_lock
    from bot.telegram.app import check_telegram, run_telegram

    notifier = SystemdNotifier.from_environment()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        async with notifier.watchdog():
            # One bot per database, checked before the model loads: a second one stops at once.
            async with hold_instance_lock(settings.database_url):
                notifier.status("connecting to the Telegram Bot API")
                username = await check_telegram(settings)
                log.info("connected to the Bot API as @%s", username)
                notifier.status("loading the model")
                async with open_runtime(settings, engine=engine) as runtime:
                    await run_telegram(settings, runtime.service, stop, notifier=notifier)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
    return 0


async def _run_console(
    settings: Settings,
    *,
    color: bool,
    banner: str | None = None,
    prompt_file: Path | None = None,
    flags: argparse.Namespace | None = None,
    language: str = SOURCE,
) -> int:
    """`banner`: an English message (`N_`), shown in `language`."""
    from bot.console import CONSOLE_CHAT, run_console
    from bot.ops.runtime import open_runtime

    async with open_runtime(settings) as runtime:
        service = runtime.service
        if flags is not None:
            # Flags given on the command line are stored for the console chat, like a /command.
            for knob in KNOBS:
                value = getattr(flags, knob.name, None)
                if value is not None:
                    await service.chat_settings.change(CONSOLE_CHAT, knob, str(value))
        if prompt_file is not None:
            try:
                text = await asyncio.to_thread(prompt_file.read_text, encoding="utf-8")
            except OSError as exc:
                raise UserError(f"cannot read prompt file {prompt_file}: {exc.strerror}") from None
            await service.chat_settings.set_system(CONSOLE_CHAT, text)
        info = runtime.engine.info
        header = f"alpaca-bot {__version__} — model {info.name} ({info.path.name})"
        with speaking(language):
            intro = f"{_(banner)}\n\n{header}" if banner else header
        await run_console(service, color=color, banner=intro, language=language)
    return 0
