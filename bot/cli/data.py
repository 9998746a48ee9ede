"""Subcommands over the database and the installation: migrate, backup, export, access,
doctor."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from bot.errors import UserError
from bot.settings import Settings


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from bot.store.database import migrate

    settings.data.mkdir(parents=True, exist_ok=True)
    migrate(settings.database_url)
    print(f"database is up to date: {safe_url(settings.database_url)}")
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.engine import make_url

    from bot.models.progress import format_bytes
    from bot.store.backup import backup_sqlite, pg_dump_command, sqlite_path

    url = settings.database_url
    source = sqlite_path(url)
    if source is None:
        if make_url(url).get_backend_name() == "postgresql":
            raise UserError("the database is PostgreSQL, which alpaca-bot does not copy itself; "
                            f"back it up with: {pg_dump_command(url, args.file)}")
        raise UserError(f"cannot back up {safe_url(url)}: only a SQLite file is copied")
    report = backup_sqlite(source, args.file, force=args.force)
    print(f"backed up {source} to {report.target} ({format_bytes(report.size)}): "
          f"{report.chats} chats, {report.turns} turns")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    text = asyncio.run(_export(settings, args.chat_id, args.format))
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    from bot.chat.export import write_export

    try:
        write_export(args.output, text)
    except OSError as exc:
        raise UserError(f"cannot write {args.output}: {exc.strerror}") from None
    print(f"wrote chat {args.chat_id} to {args.output} ({args.format})", file=sys.stderr)
    return 0


async def _export(settings: Settings, chat_id: int, fmt: Any) -> str:
    from sqlalchemy.exc import DBAPIError

    from bot.chat.export import export_chat
    from bot.store.backup import sqlite_path
    from bot.store.database import open_database, sessions

    url = settings.database_url
    source = sqlite_path(url)
    if source is not None and not source.is_file():
        raise UserError(f"no database at {source}")
    database = open_database(url)
    try:
        return await export_chat(sessions(database), chat_id, fmt)
    except (DBAPIError, OSError) as exc:
        raise UserError(f"cannot read {safe_url(url)}: {getattr(exc, 'orig', exc)} "
                        "(alpaca-bot migrate brings an older database up to date)") from None
    finally:
        await database.dispose()


def cmd_access(args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(_access(settings, args.action, getattr(args, "id", None))))
    return 0


async def _access(settings: Settings, action: str, some_id: int | None) -> str:
    """`alpaca-bot access list|allow ID|deny ID`, on the database the bot uses (a running bot
    sees the change at the next message)."""
    from bot.chat.access import AccessControl, parse_id
    from bot.store.database import migrate_async, open_database, sessions

    settings.data.mkdir(parents=True, exist_ok=True)
    await migrate_async(settings.database_url)
    database = open_database(settings.database_url)
    try:
        control = AccessControl(settings=settings, sessions=sessions(database))
        if action == "list":
            return await control.listing()
        chosen = parse_id(str(some_id), action)
        if action == "allow":
            return await control.allow(chosen)
        return await control.deny(chosen)
    finally:
        await database.dispose()


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from bot.ops.doctor import run_doctor

    return run_doctor(settings, sys.stdout)


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
