"""The voice notes' settings: asr_model, asr_threads, asr_language and asr_max_seconds, from the
config file and their ALPACA_BOT_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import load_settings


def test_the_defaults_hear_with_the_packaged_whisper_base() -> None:
    settings = load_settings(None)
    assert settings.asr_model == "base"
    assert settings.asr_threads is None and settings.asr_language == "auto"
    assert settings.asr_max_seconds == 300


def test_from_the_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "alpaca-bot.toml"
    config.write_text('asr_model = "/srv/whisper-small"\nasr_threads = 3\nasr_language = "zh"\n'
                      "asr_max_seconds = 120\n")
    settings = load_settings(config)
    assert (settings.asr_model, settings.asr_threads, settings.asr_language,
            settings.asr_max_seconds) == ("/srv/whisper-small", 3, "zh", 120)
    monkeypatch.setenv("ALPACA_BOT_ASR_MODEL", "")
    monkeypatch.setenv("ALPACA_BOT_ASR_THREADS", "1")
    monkeypatch.setenv("ALPACA_BOT_ASR_LANGUAGE", "AUTO")
    monkeypatch.setenv("ALPACA_BOT_ASR_MAX_SECONDS", "30")
    settings = load_settings(config)
    assert (settings.asr_model, settings.asr_threads, settings.asr_language,
            settings.asr_max_seconds) == ("", 1, "auto", 30)


@pytest.mark.parametrize(("key", "value"), [
    ("ALPACA_BOT_ASR_LANGUAGE", "Chinese please"), ("ALPACA_BOT_ASR_MAX_SECONDS", "0"),
    ("ALPACA_BOT_ASR_THREADS", "0"),
])
def test_bad_values_are_one_line(key: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=key.removeprefix("ALPACA_BOT_").lower()):
        load_settings(None)
