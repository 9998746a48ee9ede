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


async def test_a_database_of_the_last_release_upgrades_with_every_value(tmp_path: Path) -> None:
    """Chats with settings, turns, quantize jobs and bot state made by migrations 0001-0002
    keep every value after the upgrade; the new knobs start unset (the configured default)."""
    from bot.core.chats import ChatRef
    from bot.store import repository as repo
    from bot.store.database import migrate_async, open_database, sessions

    path = tmp_path / "release.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    await migrate_async(url, "0002")
    chat_row = {
        "id": -1001, "kind": "supergroup", "title": "Llamas", "temp": 0.7, "top_k": 12,
        "top_p": 0.8, "repeat_penalty": 1.1, "n_predict": 300, "n_ctx": 1024,
        "system_prompt": "Be brief.", "window_start": 2,
    }
    with sqlite3.connect(path) as connection:
        connection.execute(
            f"insert into chats ({', '.join(chat_row)}, created_at, updated_at) values "
            f"({', '.join('?' * len(chat_row))}, '2026-11-01', '2026-11-02')",
            tuple(chat_row.values()),
        )
        connection.execute(
            "insert into chats (id, kind, window_start, created_at, updated_at) "
            "values (7, 'private', 0, '2026-11-01', '2026-11-01')"
        )
        connection.executemany(
            "insert into turns (id, chat_id, role, state, text, speaker, user_id, reply_to, "
            "message_id, message_ids, thread_id, delivered, stop_reason, n_tokens, created_at) "
            "values (?, -1001, ?, ?, ?, ?, ?, ?, ?, ?, 9, ?, ?, ?, '2026-11-01')",
            [
                (2, "user", "answered", "Hi", "Alice", 42, None, 100, None, 1, None, None),
                (3, "assistant", "complete", "Hello!", None, None, 2, 101, "101,102", 1,
                 "eos", 5),
            ],
        )
        connection.execute(
            "insert into quantize_jobs (id, requested_by, chat_id, progress_message_id, "
            "source, target, qtype, state, error, size_before, size_after, seconds, "
            "started_at, finished_at) values (4, 42, -1001, 103, '/m/a-f16.gguf', "
            "'/m/a-q4_0.gguf', 'q4_0', 'done', NULL, 2000, 600, 12.5, '2026-11-01', "
            "'2026-11-01')"
        )
        connection.execute("insert into bot_state (key, value) values ('model', '{\"a\": 1}')")
        before = {
            table: connection.execute(f"select * from {table} order by 1").fetchall()
            for table in ("chats", "turns", "quantize_jobs", "bot_state")
        }
    await migrate_async(url)
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        for table, rows in before.items():
            after = connection.execute(f"select * from {table} order by 1").fetchall()
            assert len(after) == len(rows), table
            for old, new in zip(rows, after, strict=True):
                assert tuple(new)[: len(old)] == old, table  # new columns come last
        new_knobs = connection.execute("select min_p, repeat_last_n from chats").fetchall()
        assert [tuple(row) for row in new_knobs] == [(None, None), (None, None)]
    database = open_database(url)
    try:
        async with sessions(database)() as session:
            chat = await repo.get_or_create_chat(session, ChatRef(-1001, "supergroup"))
            assert repo.stored_knobs(chat) == {
                "temp": 0.7, "top_k": 12, "top_p": 0.8, "repeat_penalty": 1.1,
                "n_predict": 300, "n_ctx": 1024,
            }
            turns = await repo.conversation(session, chat)
            assert [(t.role, t.text) for t in turns] == [("user", "Hi"), ("assistant", "Hello!")]
            assert repo.decode_message_ids(turns[1].message_ids) == [101, 102]
            await repo.set_chat_values(session, chat.id, min_p=0.2, repeat_last_n=128)
            await session.commit()
            assert repo.stored_knobs(chat)["repeat_last_n"] == 128
    finally:
        await database.dispose()
