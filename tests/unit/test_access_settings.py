"""The access and fair-use keys: their defaults, the environment, the config file, and the
example config documenting each."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import load_settings

KEYS = ("access", "allow", "user_messages_per_minute", "user_tokens_per_day", "chat_waiting_max")


def test_the_defaults_are_pairing_and_the_fair_use_limits() -> None:
    settings = load_settings(None)
    assert settings.access == "pairing" and settings.allow == []
    assert (settings.user_messages_per_minute, settings.user_tokens_per_day,
            settings.chat_waiting_max) == (6, 0, 3)


def test_the_environment_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BOT_ACCESS", "allowlist")
    monkeypatch.setenv("ALPACA_BOT_ALLOW", "12, -1001234567890;34")
    monkeypatch.setenv("ALPACA_BOT_USER_MESSAGES_PER_MINUTE", "10")
    monkeypatch.setenv("ALPACA_BOT_USER_TOKENS_PER_DAY", "20000")
    monkeypatch.setenv("ALPACA_BOT_CHAT_WAITING_MAX", "5")
    settings = load_settings(None)
    assert settings.access == "allowlist" and settings.allow == [12, -1001234567890, 34]
    assert (settings.user_messages_per_minute, settings.user_tokens_per_day,
            settings.chat_waiting_max) == (10, 20000, 5)


def test_the_config_file_sets_them_and_bad_values_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "alpaca-bot.toml"
    path.write_text('access = "open"\nallow = [7, -100]\nchat_waiting_max = 0\n')
    settings = load_settings(path)
    assert (settings.access, settings.allow, settings.chat_waiting_max) == ("open", [7, -100], 0)
    path.write_text('access = "everyone"\n')
    with pytest.raises(ConfigError, match="access"):
        load_settings(path)
    path.write_text("user_messages_per_minute = -1\n")
    with pytest.raises(ConfigError, match="user_messages_per_minute"):
        load_settings(path)


def test_the_example_config_comments_every_key() -> None:
    example = (Path(__file__).resolve().parents[2] / "config" / "alpaca-bot.toml").read_text()
    for key in KEYS:
        assert f"\n# {key} = " in example, key
        assert f"ALPACA_BOT_{key.upper()}" in example, key
