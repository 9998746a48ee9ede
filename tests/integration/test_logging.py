"""The bot token never reaches the log, whatever logs it (httpx logs request URLs)."""

from __future__ import annotations

import io
import logging

import pytest

from bot.cli import setup_logging


def test_token_is_redacted_from_every_log_line(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    token = "7000000001:AAsecret-token-value"
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging(make_settings(token=token, log_level="DEBUG"))
        logging.getLogger("httpx").warning("HTTP Request: POST https://api.telegram.org/bot%s/getMe", token)
        logging.getLogger("bot.telegram").error("failed calling %s", f"https://x/bot{token}/sendMessage")
        logging.getLogger("other").info(f"token in the message itself: {token}")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    output = stream.getvalue()
    assert token not in output
    assert output.count("<token>") == 3


def test_settings_never_show_the_token(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(token="123:topsecret")
    assert "topsecret" not in repr(settings) and "topsecret" not in str(settings)


def test_token_is_redacted_from_logged_tracebacks(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A failed request's exception quotes its URL, token included: the traceback under the log
    line shows <token> there too."""
    token = "7000000001:AAsecret-token-value"
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging(make_settings(token=token, log_level="DEBUG"))
        try:
            raise ConnectionError(f"cannot reach https://api.telegram.org/bot{token}/getUpdates")
        except ConnectionError:
            logging.getLogger("telegram.ext.Updater").exception("polling failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    output = stream.getvalue()
    assert "polling failed" in output and "ConnectionError: cannot reach" in output
    assert token not in output
    assert "https://api.telegram.org/bot<token>/getUpdates" in output
