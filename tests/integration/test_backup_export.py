"""`alpaca-bot backup` and `alpaca-bot export`: a consistent copy of the SQLite database taken
while turns are being written, the pg_dump line for PostgreSQL, and one chat's conversation as
JSON lines and as Markdown (on both databases)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from bot.cli import main
from bot.core.chats import ChatRef
from bot.store import repository as repo
from bot.store.database import migrate, open_database, sessions

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("ALPACA_BOT_DATA", str(data))
    return data


def sqlite_url(data: Path) -> str:
    return f"sqlite+aiosqlite:///{data / 'alpaca-bot.sqlite3'}"


# -- backup --------------------------------------------------------------------------------


async def test_a_backup_taken_while_turns_are_written_has_every_committed_turn(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(data_dir)
    await asyncio.to_thread(migrate, url)
    database = open_database(url)  # the bot's own engine: WAL, one writer
    committed: list[int] = []
    reached = {50: asyncio.Event()}
    copy = tmp_path / "backups" / "copy.sqlite3"
    try:
        factory = sessions(database)
        ref = ChatRef(5, "private", "Writer")

        async def write(until: asyncio.Event) -> None:
            while not until.is_set():
                async with factory() as session:
                    await repo.get_or_create_chat(session, ref)
                    turn = await repo.add_user_turn(session, ref.chat_id, f"turn {len(committed)}")
                    await session.commit()
                committed.append(turn.id)
                if len(committed) in reached:
                    reached[len(committed)].set()
                await asyncio.sleep(0)

        done = asyncio.Event()
        writer = asyncio.create_task(write(done))
        await reached[50].wait()
        before = list(committed)
        code = await asyncio.to_thread(main, ["backup", str(copy)])
        reached[len(committed) + 20] = more = asyncio.Event()
        await asyncio.wait_for(more.wait(), 30)  # the writer was never stopped by the backup
        done.set()
        await writer
    finally:
        await database.dispose()
    assert code == 0
    out = capsys.readouterr().out
    assert f"to {copy}" in out and "1 chats" in out
    ids = check_copy(copy)
    # Every turn committed before the backup began, and one consistent moment: a prefix of
    # the committed turns, none missing in between.
    assert set(before) <= set(ids)
    assert ids == committed[: len(ids)]
    assert f"{len(ids)} turns" in out


def check_copy(copy: Path) -> list[int]:
    """The turn ids of a backup, once it passes SQLite's integrity check as one file."""
    assert not list(copy.parent.glob("*.tmp")) and not Path(f"{copy}-wal").exists()
    with sqlite3.connect(copy) as backup:
        assert backup.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert backup.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        ids = [row[0] for row in backup.execute("SELECT id FROM turns ORDER BY id")]
        texts = [row[0] for row in backup.execute("SELECT text FROM turns ORDER BY id")]
    assert texts == [f"turn {i}" for i in range(len(ids))]
    return ids


def test_a_backup_never_overwrites_without_force(data_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    migrate(sqlite_url(data_dir))
    target = tmp_path / "copy.sqlite3"
    target.write_text("precious")
    assert main(["backup", str(target)]) == 2
    assert capsys.readouterr().err == (
        f"alpaca-bot: error: {target} exists; pass --force to replace it\n"
    )
    assert target.read_text() == "precious"
    assert main(["backup", str(target), "--force"]) == 0
    with sqlite3.connect(target) as backup:
        assert backup.execute("SELECT count(*) FROM chats").fetchone() == (0,)


def test_a_backup_of_a_missing_database_says_so(data_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backup", str(tmp_path / "copy")]) == 2
    assert capsys.readouterr().err == (
        f"alpaca-bot: error: no database at {data_dir / 'alpaca-bot.sqlite3'}\n"
    )


def test_postgresql_is_backed_up_with_pg_dump(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ALPACA_BOT_DB", "postgresql://bot:s3cret@db.example:5433/alpaca")
    assert main(["backup", "/backups/bot.dump"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "alpaca-bot: error: the database is PostgreSQL, which alpaca-bot does not copy itself; "
        "back it up with: pg_dump --format=custom --file=/backups/bot.dump --host=db.example "
        "--port=5433 --username=bot alpaca\n"
    )
    assert "s3cret" not in captured.err


# -- export --------------------------------------------------------------------------------


GROUP = ChatRef(-1001234567890, "supergroup", "Llama fans")


async def fill(url: str) -> None:
    database = open_database(url)
    try:
        async with sessions(database)() as session:
            await repo.get_or_create_chat(session, GROUP)
            first = await repo.add_user_turn(session, GROUP.chat_id, "What do llamas eat?",
                                             speaker="Alice", message_id=10)
            reply = await repo.start_reply(session, first)
            await repo.finish_reply(session, reply, "Mostly grass.", reason="eos", n_tokens=3)
            await repo.add_user_turn(session, GROUP.chat_id, "And alpacas?", speaker="Bob",
                                     message_id=12)
            topic = await repo.get_or_create_chat(
                session, ChatRef(GROUP.chat_id, GROUP.kind, GROUP.title, thread_id=42))
            await repo.add_user_turn(session, topic.id, "Off topic?", speaker="Dan", thread_id=42)
            private = ChatRef(77, "private", "Carol Jones")
            await repo.get_or_create_chat(session, private)
            await repo.add_user_turn(session, private.chat_id, "hi", message_id=1)
            await session.commit()
    finally:
        await database.dispose()


@pytest.fixture
def stored(data_dir: Path, database_kind: str, database_url: str,
           monkeypatch: pytest.MonkeyPatch) -> str:
    if database_kind != "sqlite":
        monkeypatch.setenv("ALPACA_BOT_DB", database_url)
    migrate(database_url)
    asyncio.run(fill(database_url))
    return database_url


def test_export_as_json_lines(stored: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(GROUP.chat_id)]) == 0
    lines = capsys.readouterr().out.splitlines()
    turns = [json.loads(line) for line in lines]
    assert [(t["role"], t["speaker"], t["text"], t["state"], t["thread_id"]) for t in turns] == [
        ("user", "Alice", "What do llamas eat?", "answered", None),
        ("assistant", None, "Mostly grass.", "complete", None),
        ("user", "Bob", "And alpacas?", "pending", None),
        ("user", "Dan", "Off topic?", "pending", 42),  # a forum topic of the group
    ]
    assert turns[1]["reply_to"] == turns[0]["id"] and turns[0]["message_id"] == 10
    assert all(t["time"].endswith("+00:00") for t in turns)


def test_export_as_markdown_to_a_file(stored: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "llamas.md"
    assert main(["export", str(GROUP.chat_id), "--format", "md", "-o", str(target)]) == 0
    assert capsys.readouterr().out == ""
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# Llama fans\n")
    assert "**Alice**: What do llamas eat?\n\n**alpaca-bot**: Mostly grass.\n" in text
    assert "**Bob**: And alpacas? *(pending)*" in text
    assert text.index("## General") < text.index("And alpacas?") < text.index("## Topic 42")
    assert "**Dan**: Off topic? *(pending)*" in text
    assert main(["export", "77", "--format", "md"]) == 0
    assert "**Carol Jones**: hi" in capsys.readouterr().out


def test_an_export_file_is_private_whatever_the_umask(stored: str, tmp_path: Path) -> None:
    fresh, existing = tmp_path / "fresh.md", tmp_path / "existing.jsonl"
    existing.write_text("old")
    existing.chmod(0o644)
    previous = os.umask(0o022)
    try:
        assert main(["export", str(GROUP.chat_id), "--format", "md", "-o", str(fresh)]) == 0
        assert main(["export", str(GROUP.chat_id), "-o", str(existing)]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert "What do llamas eat?" in existing.read_text(encoding="utf-8")


def test_export_of_an_unknown_chat_is_one_error_line(stored: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "-5"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "alpaca-bot: error: no chat -5 in the database\n"
