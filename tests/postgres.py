"""A throwaway PostgreSQL cluster for the tests: `initdb` and `pg_ctl` in a temporary directory,
reachable only through a unix socket there, owned by an unprivileged user when the tests run as
root (the server refuses to run as root), and a fresh empty database for each test."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

SUPERUSER = "alpaca"
SERVER_USER = "nobody"
"""Who runs the server when the tests run as root."""
SESSION_PID = "session.pid"
"""The file in a cluster's directory naming the test process it belongs to."""
POSTGRES_INSTALL_HINT = (
    "PostgreSQL's server is not installed, and the tests need it: run `make system-packages` "
    "(as root: apt-get install -y --no-install-recommends postgresql)"
)
# Durability is worth nothing in a cluster deleted after the tests; speed is.
SERVER_OPTIONS = (
    "-c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c shared_buffers=16MB -c max_connections=100 -c log_min_messages=warning"
)


def find_server_binaries() -> Path | None:
    """The newest Debian server (/usr/lib/postgresql/<version>/bin), else `pg_ctl` on PATH."""

    def version(pg_ctl: Path) -> list[int]:
        return [int(part) for part in pg_ctl.parent.parent.name.split(".") if part.isdigit()]

    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=version)
    if installed:
        return installed[-1].parent
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).resolve().parent / "initdb").exists():
        return Path(on_path).resolve().parent
    return None


class PostgresCluster:
    """One server for the whole test session; `create_database()` gives each test its own."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # A short path: a unix socket's name must stay under ~100 bytes, and when we are root
        # the server's user must be able to reach it (so not under root's own $TMPDIR).
        self.root = Path(tempfile.mkdtemp(prefix="alpaca-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        try:
            self._owner = pwd.getpwnam(SERVER_USER) if os.geteuid() == 0 else None
        except KeyError:
            raise RuntimeError(
                f"PostgreSQL will not run as root, and there is no user {SERVER_USER!r} to run it"
            ) from None
        if self._owner is not None:
            os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self.running = False
        self.major = 0

    def _run(self, *args: str, cwd: Path | None = None) -> str:
        """A server program, as the cluster's owner; its output goes into the error on failure."""
        owner: dict[str, Any] = {}
        if self._owner is not None:
            owner = {"user": self._owner.pw_uid, "group": self._owner.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]], cwd=cwd or self.root, env=env,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, **owner,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}"
            )
        return result.stdout

    def _stop_abandoned(self) -> None:
        """Stop and delete the clusters of test sessions that were killed before their end
        (sessions still running, maybe someone else's, keep theirs)."""
        for root in Path("/tmp").glob("alpaca-pg-*"):
            try:
                pid = int((root / SESSION_PID).read_text())
                os.kill(pid, 0)
                continue
            except ProcessLookupError:
                pass
            except (OSError, ValueError):
                continue  # not ours to judge: another user's, or just being created
            if (root / "data" / "postmaster.pid").exists():
                with contextlib.suppress(RuntimeError):
                    self._run("pg_ctl", "-D", str(root / "data"), "-m", "immediate", "stop", cwd=root)
            shutil.rmtree(root, ignore_errors=True)

    def start(self) -> PostgresCluster:
        self._stop_abandoned()
        (self.root / SESSION_PID).write_text(str(os.getpid()))
        version = re.search(r"\) (\d+)", self._run("postgres", "--version"))
        self.major = int(version.group(1)) if version else 0
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "--no-locale",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", f"{SERVER_OPTIONS} -k {self.root}", "start",
        )
        self.running = True
        return self

    def stop(self) -> None:
        try:
            if self.running:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
                self.running = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@/{database}?host={self.root}"

    def create_database(self) -> str:
        """A new empty database; its name."""
        with self._lock:
            name = f"test_{next(self._names)}"
        # template0 is small and never touched; FILE_COPY beats WAL-logging it (no fsync here).
        strategy = " STRATEGY FILE_COPY" if self.major >= 15 else ""
        self.execute(f"CREATE DATABASE {name} TEMPLATE template0{strategy}")
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def execute(self, statement: str, database: str = "postgres") -> None:
        """One statement as the superuser, from a thread of its own (the caller may be inside a
        running event loop, or in none)."""
        import asyncpg

        async def run() -> None:
            connection = await asyncpg.connect(
                host=str(self.root), user=SUPERUSER, database=database
            )
            try:
                await connection.execute(statement)
            finally:
                await connection.close()

        failure: list[BaseException] = []

        def in_thread() -> None:
            try:
                asyncio.run(run())
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)

        thread = threading.Thread(target=in_thread, name="postgres-admin")
        thread.start()
        thread.join()
        if failure:
            raise failure[0]
