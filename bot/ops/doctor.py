"""`alpaca-bot doctor`: every check the bot needs to run, each with what is wrong and how to fix
it. It changes nothing (no migration, no download); the exit status says whether all passed."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bot.errors import AlpacaBotError
from bot.settings import Settings, draft_ignored

GIB = 1 << 30
MIB = 1 << 20
MIN_FREE_BYTES = 1 * GIB
"""Free space the data directory should keep on top of the saved states' bound."""


@dataclass(frozen=True)
class Finding:
    """One check's result: `problem` is None when it passed."""

    name: str
    detail: str
    problem: str | None = None
    fix: str | None = None
    warning: bool = False

    def line(self) -> str:
        if self.problem is None:
            return f"{'!' if self.warning else '✓'} {self.name}: {self.detail}"
        text = f"✗ {self.name}: {self.problem}"
        return text + (f"\n    fix: {self.fix}" if self.fix else "")


def _exists(path: str) -> bool:
    return Path(path).expanduser().exists()


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# -- the checks -------------------------------------------------------------------------------


def check_config(settings: Settings) -> Finding:
    where = str(settings.config) if settings.config else "no file (defaults and ALPACA_BOT_* only)"
    return Finding("config", f"{where}; engine {settings.engine}")


def check_model(settings: Settings) -> list[Finding]:
    if settings.engine == "remote":
        return []  # the servers hold the model: see check_backends
    from bot.llama.gguf_file import read_gguf_info
    from bot.llama.loading import check_model_file
    from bot.models.demo import INSTALL_HINT, find_demo_model

    path = settings.model.expanduser() if settings.model is not None else find_demo_model()
    if path is None:
        return [Finding("model", "", "no model configured and the demo model is not installed",
                        f"set ALPACA_BOT_MODEL (or `model`) to a GGUF file, or `{INSTALL_HINT}`")]
    if not path.is_file():
        return [Finding("model", "", f"{path} does not exist",
                        "set ALPACA_BOT_MODEL (or `model` in the config) to a GGUF file")]
    try:
        check_model_file(path)
        info = read_gguf_info(path)
    except (AlpacaBotError, OSError, ValueError) as exc:
        return [Finding("model", "", f"{path} cannot be used: {exc}",
                        "download or convert it again (`alpaca-bot convert`, then `quantize`)")]
    size = path.stat().st_size
    name = info.name or path.name
    return [Finding("model", f"{path} ({name}, {info.file_type_name}, {size / GIB:.2f} GiB)")]


def check_drafting(settings: Settings) -> list[Finding]:
    """Speculative decoding in the pool: the draft model's file, and the KV cache it runs on."""
    if settings.draft == "none":
        return []
    if (ignored := draft_ignored(settings)) is not None:
        return [Finding("draft", ignored, warning=True)]
    from bot.llama.loading import check_model_file

    if settings.draft != "ngram":
        path = Path(settings.draft).expanduser()
        try:
            check_model_file(path)
        except (AlpacaBotError, OSError, ValueError) as exc:
            return [Finding("draft", "", f"the draft model {path} cannot be used: {exc}",
                            "set ALPACA_BOT_DRAFT (or `draft`) to a small GGUF with the model's "
                            "vocabulary, or to ngram or none")]
    what = f"{settings.draft}, up to {settings.draft_max} tokens a step, {settings.kv_type} cache"
    if settings.kv_type == "f16":
        from bot.engine.drafting import F16_ADVICE

        return [Finding("draft", f"{what}: {F16_ADVICE} (see Performance)", warning=True)]
    return [Finding("draft", what)]


async def check_backends(settings: Settings) -> list[Finding]:
    if settings.engine != "remote":
        return []
    import httpx

    from bot.engine.remote.http import ServerConnection
    from bot.engine.remote.llamacpp import LlamaServer
    from bot.engine.remote.openai import OpenAIServer

    findings = []
    async with httpx.AsyncClient(timeout=10.0) as client:
        for spec in settings.backends:
            key = spec.api_key.get_secret_value() if spec.api_key else None
            connection = ServerConnection(client, spec.url, key)
            server = LlamaServer(connection) if spec.kind == "llama.cpp" else OpenAIServer(
                connection, spec)
            try:
                facts = await server.facts()
            except AlpacaBotError as exc:
                findings.append(Finding(
                    f"model server {spec.label}", "", f"does not answer as a {spec.kind} server: {exc}",
                    "start it (llama-server -m MODEL --host 0.0.0.0 --port PORT), or fix its url, "
                    "kind or api_key in `backends`"))
                continue
            findings.append(Finding(
                f"model server {spec.label}",
                f"{spec.kind}, {Path(facts.model).name}, {facts.slots} slots of {facts.n_ctx} tokens"))
    return findings


async def check_database(settings: Settings) -> Finding:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from bot.store.database import alembic_config, open_database

    url = settings.database_url
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and \
            not await asyncio.to_thread(_exists, parsed.database):
        return Finding("database", f"{parsed.database} does not exist yet; `start` creates it",
                       warning=True)
    try:
        engine = open_database(url)
    except AlpacaBotError as exc:
        return Finding("database", "", str(exc), "fix ALPACA_BOT_DB (or `db`)")
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision())
    except (SQLAlchemyError, OSError) as exc:
        return Finding("database", "", f"{_safe_url(url)} cannot be opened: {exc}",
                       "check the URL, that the server runs and the user may connect")
    finally:
        await engine.dispose()
    if current == head:
        return Finding("database", f"{_safe_url(url)}, schema {current} (the newest)")
    if current is None:
        return Finding("database", f"{_safe_url(url)} is empty; `start` creates the tables",
                       warning=True)
    return Finding("database", f"{_safe_url(url)}, schema {current}; the newest is {head} "
                   "(`start` upgrades it, or run `alpaca-bot migrate`)", warning=True)


def check_disk(settings: Settings) -> list[Finding]:
    findings = []
    for label, folder, need in (
        ("disk for data and saved states", settings.data, MIN_FREE_BYTES + (settings.state_max_mb << 20)),
        ("disk for models", settings.models_directory, 0),
    ):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            free = shutil.disk_usage(existing).free
        except OSError as exc:
            findings.append(Finding(label, "", f"cannot read {folder}: {exc.strerror}",
                                    f"create {folder} and let the bot's user write to it"))
            continue
        if need and free < need:
            findings.append(Finding(
                label, "", f"{free / GIB:.1f} GiB free in {existing}, {need / GIB:.1f} GiB wanted "
                f"(state_max_mb {settings.state_max_mb} plus 1 GiB)",
                "free some disk, or lower state_max_mb (0 stops saving chats' states)"))
        else:
            findings.append(Finding(label, f"{free / GIB:.1f} GiB free in {existing}"))
    return findings


async def check_token(settings: Settings) -> Finding:
    if settings.token is None:
        return Finding("Telegram token", "none set: `start` opens the console chat "
                       "(set ALPACA_BOT_TOKEN for the Telegram bot)", warning=True)
    from telegram import Bot
    from telegram.error import InvalidToken, NetworkError, TelegramError

    bot = Bot(settings.token.get_secret_value(), base_url=settings.api_url)
    try:
        async with bot:
            me = bot.username
    except InvalidToken:
        return Finding("Telegram token", "", "the Bot API rejected the token",
                       "copy it again from @BotFather (/token) into ALPACA_BOT_TOKEN")
    except NetworkError as exc:
        return Finding("Telegram token", "", f"cannot reach the Bot API at {settings.api_url}: {exc}",
                       "check the network (and api_url if you run your own Bot API server)")
    except TelegramError as exc:
        return Finding("Telegram token", "", f"getMe failed: {exc}", None)
    return Finding("Telegram token", f"the Bot API knows it as @{me}")


def check_listen(settings: Settings) -> list[Finding]:
    if settings.metrics_address is None:
        return [Finding("metrics_listen", "empty: no /healthz, /readyz or /metrics", warning=True)]
    return [Finding("metrics_listen", f"http://{settings.metrics_listen} (/healthz, /readyz, "
                    "/metrics)")]


# -- the command ----------------------------------------------------------------------------------


async def diagnose(settings: Settings) -> list[Finding]:
    findings = [check_config(settings)]
    findings += await asyncio.to_thread(check_model, settings)
    findings += await asyncio.to_thread(check_drafting, settings)
    findings += await check_backends(settings)
    findings.append(await check_database(settings))
    findings += await asyncio.to_thread(check_disk, settings)
    findings += check_listen(settings)
    findings.append(await check_token(settings))
    return findings


def run_doctor(settings: Settings, out: TextIO, *,
               diagnosis: Callable[[Settings], Coroutine[Any, Any, list[Finding]]] = diagnose) -> int:
    """Print every finding; 1 if any check found a problem, else 0."""
    findings = asyncio.run(diagnosis(settings))
    for finding in findings:
        out.write(finding.line() + "\n")
    problems = sum(1 for finding in findings if finding.problem is not None)
    out.write("\nall checks passed\n" if not problems else
              f"\n{problems} problem{'s' if problems != 1 else ''} found\n")
    return 1 if problems else 0
