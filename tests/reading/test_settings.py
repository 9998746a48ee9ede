"""The reading settings: config keys and their ALPACA_BOT_ environment variables."""

from __future__ import annotations

import pytest

from bot.errors import ConfigError
from bot.settings import load_settings


def test_defaults() -> None:
    settings = load_settings(None)
    assert settings.image_max_pixels == 4_000_000
    assert settings.document_max_chars == 500_000
    assert settings.document_tokens == 0  # a third of the window
    assert settings.api_file_url is None


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BOT_IMAGE_MAX_PIXELS", "1000000")
    monkeypatch.setenv("ALPACA_BOT_DOCUMENT_MAX_CHARS", "20000")
    monkeypatch.setenv("ALPACA_BOT_DOCUMENT_TOKENS", "512")
    monkeypatch.setenv("ALPACA_BOT_API_FILE_URL", "http://127.0.0.1:8081/file/bot")
    settings = load_settings(None)
    assert (settings.image_max_pixels, settings.document_max_chars, settings.document_tokens) == (
        1_000_000, 20_000, 512)
    assert settings.api_file_url == "http://127.0.0.1:8081/file/bot"


def test_out_of_range_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BOT_DOCUMENT_TOKENS", "-1")
    with pytest.raises(ConfigError, match="document_tokens"):
        load_settings(None)
