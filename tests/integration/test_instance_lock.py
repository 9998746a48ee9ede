"""One bot per database: the second holder of the lock is refused with one clear line, on
SQLite and on PostgreSQL, in this process and from a second `alpaca-bot start`."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bot.store.instance_lock import AnotherInstanceRunning, hold_instance_lock
from tests.postgres import PostgresCluster


async def test_a_second_holder_is_refused_until_the_first_lets_go(database_url: str) -> None:
    async with hold_instance_lock(database_url):
        with pytest.raises(AnotherInstanceRunning) as refused:
            async with hold_instance_lock(database_url):
                raise AssertionError("the lock was taken twice")
        message = str(refused.value)
        assert message.startswith("another alpaca-bot process is already running with this "
                                  "database (")
        assert message.endswith(f", pid {os.getpid()} on {os.uname().nodename}); stop it first")
    async with hold_instance_lock(database_url):
        pass


async def test_bots_on_different_databases_do_not_meet(  # type: ignore[no-untyped-def]
    database_kind: str, database_url: str, tmp_path: Path, request
) -> None:
    if database_kind == "sqlite":
        other = f"sqlite+aiosqlite:///{tmp_path / 'other' / 'bot.sqlite3'}"
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        other = cluster.url(cluster.create_database())
    async with hold_instance_lock(database_url), hold_instance_lock(other):
        pass


async def test_a_second_bot_process_exits_with_one_line(database_kind: str, database_url: str, tmp_path: Path) -> None:
    url = database_url
    if database_kind == "postgresql":  # the password stays out of the message
        url = url.replace("alpaca@", "alpaca:secret@", 1).replace("+asyncpg", "", 1)
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("ALPACA_BOT_")
    } | {
        "ALPACA_BOT_TOKEN": "123:token-of-the-test", "ALPACA_BOT_DB": url,
        "ALPACA_BOT_DATA": str(tmp_path / "data"),
        # Nothing listens here: the refused bot must not even ask Telegram who it is.
        "ALPACA_BOT_API_URL": "http://127.0.0.1:9/bot",
    }
    async with hold_instance_lock(database_url):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "start", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    assert out == b""
    line = err.decode()
    assert line.startswith("alpaca-bot: error: another alpaca-bot process is already running "
                           "with this database (")
    assert line.endswith("); stop it first\n") and line.count("\n") == 1
    assert "secret" not in line
    assert f"{make_url(database_url).database}" in line
