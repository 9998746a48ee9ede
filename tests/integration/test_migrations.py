"""Alembic migrations: from an empty database, down and up again, and matching the models."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from bot.store.database import alembic_config, migrate
from bot.store.schema import Base


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("select name from sqlite_master where type = 'table'")
        return {name for (name,) in rows}


@pytest.mark.parametrize("scheme", ["sqlite", "sqlite+aiosqlite"])
def test_upgrade_from_empty_and_back(tmp_path: Path, scheme: str) -> None:
    path = tmp_path / "nested" / "dir" / "bot.sqlite3"
    url = f"{scheme}:///{path}".replace("sqlite:", "sqlite+aiosqlite:", 1) if scheme == "sqlite" else f"{scheme}:///{path}"
    migrate(url)
    assert {"chats", "turns", "quantize_jobs", "bot_state", "alembic_version"} <= tables(path)
    migrate(url)  # idempotent
    command.downgrade(alembic_config(url), "base")
    assert tables(path) == {"alembic_version"}
    migrate(url)
    assert {"chats", "turns"} <= tables(path)


def test_migrations_match_the_models(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    migrate(f"sqlite+aiosqlite:///{path}")
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_cli_migrate_accepts_both_sqlite_url_forms(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from bot.cli import main

    for name, url in (("a.db", "sqlite:///{}"), ("b.db", "sqlite+aiosqlite:///{}")):
        monkeypatch.setenv("ALPACA_BOT_DB", url.format(tmp_path / name))
        monkeypatch.setenv("ALPACA_BOT_DATA", str(tmp_path / "data"))
        assert main(["migrate"]) == 0
        assert "turns" in tables(tmp_path / name)
    assert "database is up to date" in capsys.readouterr().out


def test_upgrade_from_the_first_schema_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    migrate(url, "0001")
    assert "quantize_jobs" not in tables(path)
    with sqlite3.connect(path) as connection:
        connection.execute(
            "insert into chats (id, kind, window_start, created_at, updated_at, temp) "
            "values (5, 'private', 0, '2026-01-01', '2026-01-01', 0.7)"
        )
        connection.execute(
            "insert into turns (chat_id, role, state, text, delivered, created_at) "
            "values (5, 'user', 'answered', 'kept', 1, '2026-01-01')"
        )
    migrate(url)
    assert {"quantize_jobs", "bot_state"} <= tables(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("select temp from chats where id = 5").fetchone() == (0.7,)
        assert connection.execute("select text from turns").fetchone() == ("kept",)
