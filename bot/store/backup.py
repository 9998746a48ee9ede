"""`alpaca-bot backup`: a consistent copy of a SQLite database while the bot writes to it, and
the `pg_dump` command that does the same for PostgreSQL."""

from __future__ import annotations

import os
import shlex
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from bot.errors import UserError


@dataclass(frozen=True)
class BackupReport:
    target: Path
    size: int
    chats: int
    turns: int


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None: not SQLite, or an in-memory database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def pg_dump_command(url: str, target: Path) -> str:
    """The `pg_dump` command line that backs up the database of a PostgreSQL URL into `target`
    (custom format, for `pg_restore`). The password is left out: pg_dump asks for it, or reads
    PGPASSWORD or ~/.pgpass."""
    parsed: URL = make_url(url)
    words = ["pg_dump", "--format=custom", f"--file={target}"]
    host = parsed.host or parsed.query.get("host")
    if isinstance(host, tuple):
        host = host[0]
    if host:
        words.append(f"--host={host}")
    if parsed.port:
        words.append(f"--port={parsed.port}")
    if parsed.username:
        words.append(f"--username={parsed.username}")
    words.append(parsed.database or "")
    return shlex.join(words)


def backup_sqlite(source: Path, target: Path, *, force: bool = False) -> BackupReport:
    """Copy the database at `source` into `target` with SQLite's online backup.

    The copy is taken in one step from a read-only connection, so it is one consistent moment
    of the database even while the bot writes (in WAL mode readers and the writer do not wait
    for each other). It is written to a temporary file beside `target`, made a single file
    (no WAL) and renamed into place; an existing `target` is replaced only with `force`.
    """
    if not source.is_file():
        raise UserError(f"no database at {source}")
    if target.exists() and not force:
        raise UserError(f"{target} exists; pass --force to replace it")
    if target.resolve() == source.resolve():
        raise UserError(f"{target} is the database itself")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        try:
            writer = sqlite3.connect(temporary)
            try:
                reader.backup(writer)  # pages=-1: every page in one step
                writer.execute("PRAGMA journal_mode=DELETE")
                chats, turns = _counts(writer)
                (check,) = writer.execute("PRAGMA quick_check").fetchone()
                if check != "ok":
                    raise UserError(f"the copy of {source} fails SQLite's check: {check}")
            finally:
                writer.close()
        finally:
            reader.close()
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        _place(Path(temporary), target, force=force)
    except sqlite3.Error as exc:
        raise UserError(f"cannot back up {source}: {exc}") from exc
    finally:
        Path(temporary).unlink(missing_ok=True)
    return BackupReport(target, target.stat().st_size, chats, turns)


def _counts(connection: sqlite3.Connection) -> tuple[int, int]:
    try:
        (chats,) = connection.execute("SELECT count(*) FROM chats").fetchone()
        (turns,) = connection.execute("SELECT count(*) FROM turns").fetchone()
    except sqlite3.OperationalError:  # not migrated yet: a copy all the same
        return 0, 0
    return int(chats), int(turns)


def _place(temporary: Path, target: Path, *, force: bool) -> None:
    """Rename the finished copy into place: over `target` with `force`, else only if no file
    appeared there meanwhile."""
    if force:
        os.replace(temporary, target)
    else:
        try:
            os.link(temporary, target)  # fails if target exists, unlike a rename
        except FileExistsError:
            raise UserError(f"{target} exists; pass --force to replace it") from None
        except OSError:  # a file system without hard links
            if target.exists():
                raise UserError(f"{target} exists; pass --force to replace it") from None
            os.replace(temporary, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
