"""Wiring the Telegram bot: one Application, its handlers, start-up checks, polling or the
webhook, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from functools import partial

from telegram import BotCommand
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError
from telegram.ext import ApplicationBuilder

from bot import i18n
from bot.chat import ChatService
from bot.chat.commands import menu
from bot.engine.base import ServedElsewhere
from bot.errors import ConfigError
from bot.ops.health import HealthServer, check_ready, engine_problems
from bot.ops.systemd import SystemdNotifier
from bot.settings import Settings
from bot.telegram import attachments, gate, handlers, membership, voice
from bot.telegram.files import file_url
from bot.telegram.front import DEPS_KEY, AnyApplication, BotDeps, deps_of
from bot.telegram.ordering import ChatOrderedUpdateProcessor
from bot.telegram.ratelimit import FloodLimiter
from bot.telegram.request import MeteredRequest
from bot.telegram.webhook import WebhookServer, set_webhook

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]


def build_application(settings: Settings, service: ChatService) -> AnyApplication:
    if settings.token is None:
        raise ConfigError("no Telegram token: set ALPACA_BOT_TOKEN or `token` in the config file")
    application = (
        ApplicationBuilder()
        .token(settings.token.get_secret_value())
        .base_url(settings.api_url.rstrip("/"))
        .base_file_url(file_url(settings.api_url, settings.api_file_url))
        .rate_limiter(FloodLimiter(max_retries=0))
        .concurrent_updates(ChatOrderedUpdateProcessor())
        # Every Bot API call is counted (alpaca_bot_bot_api_calls_total); the pool sizes and the
        # long poll's read timeout are what ApplicationBuilder would choose.
        .request(MeteredRequest(service.metrics, connection_pool_size=256))
        .get_updates_request(
            MeteredRequest(service.metrics, connection_pool_size=1, read_timeout=35)
        )
        .build()
    )
    application.bot_data[DEPS_KEY] = BotDeps(settings=settings, service=service)
    handlers.register(application)
    gate.register(application)
    attachments.register(application)
    voice.register(application)
    return application


async def check_telegram(settings: Settings) -> str:
    """Ask the Bot API who we are before loading a model: a bad token or URL fails fast."""
    from telegram import Bot

    if settings.token is None:
        raise ConfigError("no Telegram token: set ALPACA_BOT_TOKEN or `token` in the config file")
    bot = Bot(settings.token.get_secret_value(), base_url=settings.api_url)
    async with _start_up_errors(settings):
        async with bot:
            return bot.username
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def _start_up_errors(settings: Settings) -> AsyncIterator[None]:
    """A rejected token or an unreachable Bot API as one clear ConfigError line."""
    try:
        yield
    except InvalidToken:
        raise ConfigError(
            "Telegram rejected the bot token (check ALPACA_BOT_TOKEN; BotFather's /token shows it)"
        ) from None
    except NetworkError as exc:
        raise ConfigError(f"cannot reach the Telegram Bot API at {settings.api_url}: {exc}") from None


async def run_telegram(
    settings: Settings,
    service: ChatService,
    stop: asyncio.Event,
    *,
    poll_timeout: int = 25,
    notifier: SystemdNotifier | None = None,
) -> None:
    """Run the bot until `stop` is set. Start-up problems raise ConfigError with one clear line.

    `notifier` hears READY once updates arrive (polling or the webhook started) and STOPPING.
    """
    notifier = notifier or SystemdNotifier()
    application = build_application(settings, service)
    async with _start_up_errors(settings):
        await application.initialize()
    deps = deps_of(application.bot_data)
    jobs = service.jobs
    health = _health_server(settings, service, application)
    webhook: WebhookServer | None = None
    try:
        await _set_menus(application)
        await application.start()
        engine = service.running_model.engine
        if isinstance(engine, ServedElsewhere):
            engine.add_listener(partial(handlers.on_server_status, application))
        await handlers.report_interrupted_jobs(application)
        deps.spawn(membership.sweep_forever(application), "access sweep")
        if service.retention.days:
            # The first pass before replies resume: none is written from turns past the period.
            await service.retention.prune_logged()
            deps.spawn(service.retention.run(), "retention")  # cancelled with the rest at stop
        # What the last shutdown interrupted is found before updates arrive: a question sent
        # meanwhile would otherwise be found pending too, and answered twice.
        resumed = await handlers.resume_unfinished(application)
        if resumed:
            log.info("resuming %d replies interrupted by the last shutdown", resumed)
        mode, webhook = await _start_updates(application, settings, poll_timeout)
        log.info("Telegram bot @%s is running (%s)", application.bot.username, mode)
        notifier.ready(f"serving @{application.bot.username} ({mode})")
        await stop.wait()
    finally:
        log.info("stopping the Telegram bot")
        notifier.stopping("stopping: replies in progress are redone at the next start")
        # Replies in progress are cancelled without being stored as finished: their questions
        # stay pending and are answered again at the next start.
        await deps.cancel_all()
        if jobs is not None:
            await jobs.aclose()
        if application.updater is not None and application.updater.running:
            await application.updater.stop()
        if webhook is not None:
            await webhook.stop()
        if application.running:
            await application.stop()
        await application.shutdown()
        if health is not None:
            health.stop()


async def _set_menus(application: AnyApplication) -> None:
    """The command menu in every language: English for everyone, and each other language for
    the users whose Telegram is set to it (setMyCommands' language_code)."""
    for language in i18n.languages():
        with i18n.speaking(language):
            commands = [BotCommand(name, text) for name, text in menu()]
        code = None if language == i18n.SOURCE else language
        try:
            await application.bot.set_my_commands(commands, language_code=code)
        except TelegramError as exc:
            log.warning("could not set the command menu (%s): %s", language, exc)


def _health_server(
    settings: Settings, service: ChatService, application: AnyApplication
) -> HealthServer | None:
    """/healthz, /readyz and /metrics on metrics_listen, from now until the bot stops."""
    address = settings.metrics_address
    if address is None:
        return None

    async def ready() -> list[str]:
        return await check_ready(
            engine_ready=lambda: engine_problems(service.running_model.engine),
            database=service.ping_database, metrics=service.metrics,
            ask_bot_api=application.bot.get_me,
        )

    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    server = HealthServer(address, metrics=service.metrics, loop=asyncio.get_running_loop(),
                          ready=ready, token=token)
    server.start()
    return server


async def _start_updates(
    application: AnyApplication, settings: Settings, poll_timeout: int
) -> tuple[str, WebhookServer | None]:
    """Start receiving updates: long polling, or the webhook server when webhook_url is set."""
    updater = application.updater
    assert updater is not None
    if settings.webhook_url is None:
        await _say_webhook_goes(application)
        # start_polling deletes any webhook first (deleteWebhook), so polling just works after
        # running in webhook mode.
        await updater.start_polling(
            poll_interval=0.0, timeout=poll_timeout, drop_pending_updates=False,
            allowed_updates=ALLOWED_UPDATES,
        )
        return "polling", None
    # Always with a secret: the configured one, or a fresh one each start that only Telegram
    # learns (through setWebhook). The server answers 403 to any POST without it in
    # X-Telegram-Bot-Api-Secret-Token, before its body is read (bot/telegram/webhook.py).
    secret = (
        settings.webhook_secret.get_secret_value()
        if settings.webhook_secret is not None
        else secrets.token_urlsafe(32)
    )
    host, port = settings.webhook_address
    server = WebhookServer(bot=application.bot, queue=application.update_queue,
                           path=settings.webhook_path, secret=secret)
    try:  # listening first: Telegram is told the URL only once something answers there
        server.start(host, port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen for the webhook on {settings.webhook_listen}: {exc.strerror or exc}"
        ) from None
    try:
        await set_webhook(application.bot, url=settings.webhook_url, secret=secret,
                          allowed_updates=ALLOWED_UPDATES)
    except BaseException as exc:
        await server.stop()
        if isinstance(exc, BadRequest):
            raise ConfigError(
                f"Telegram refused the webhook URL {settings.webhook_url}: {exc.message}"
            ) from None
        raise
    return f"webhook {settings.webhook_url}", server


async def _say_webhook_goes(application: AnyApplication) -> None:
    """Log once that polling removes the webhook a run in webhook mode left behind."""
    try:
        info = await application.bot.get_webhook_info()
    except TelegramError as exc:
        log.debug("could not read the webhook info: %s", exc)
        return
    if info.url:
        log.info("deleting the webhook %s: updates are polled from now on", info.url)
