"""The addresses the bot listens on and talks to, and its endpoints' secrets: the types of
those settings, each with its check (`bot.settings` declares them)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, SecretStr, ValidationInfo

# Telegram's rule for setWebhook's secret_token: 1-256 characters of A-Z, a-z, 0-9, _ and -.
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
_METRICS_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,256}")
"""A bearer token as RFC 6750 spells one, long enough not to be guessed."""


def _unset_if_empty(value: Any) -> Any:
    """An empty string (an environment variable set to "") leaves the setting unset."""
    return None if isinstance(value, str) and not value.strip() else value


def _webhook_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("webhook_url must be an https:// URL, e.g. https://bot.example.org/tg")
    return value.strip()


def _listen(value: str) -> str:
    parse_listen(value)
    return value


def _optional_listen(value: str) -> str:
    value = value.strip()
    if value:
        parse_listen(value)
    return value


def _webhook_secret(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not _WEBHOOK_SECRET.fullmatch(value.get_secret_value()):
        raise ValueError("webhook_secret must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
    return value


def _metrics_token(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not _METRICS_TOKEN.fullmatch(value.get_secret_value()):
        raise ValueError("metrics_token must be 16-256 characters of A-Z, a-z, 0-9 and "
                         "-._~+/= (e.g. from `openssl rand -hex 32`)")
    return value


def _api_url(value: str | None, info: ValidationInfo) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"{info.field_name} must start with http:// or https://")
    return value


# The endpoints' settings, each checked where it is declared.
ApiUrl = Annotated[str, AfterValidator(_api_url)]
FileUrl = Annotated[str | None, BeforeValidator(_unset_if_empty), AfterValidator(_api_url)]
WebhookUrl = Annotated[str | None, BeforeValidator(_unset_if_empty), AfterValidator(_webhook_url)]
WebhookSecret = Annotated[SecretStr | None, BeforeValidator(_unset_if_empty),
                          AfterValidator(_webhook_secret)]
MetricsToken = Annotated[SecretStr | None, BeforeValidator(_unset_if_empty),
                         AfterValidator(_metrics_token)]
Listen = Annotated[str, AfterValidator(_listen)]
OptionalListen = Annotated[str, AfterValidator(_optional_listen)]


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8090`` for IPv6) as a host and a port; ValueError if malformed."""
    host, sep, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # ValueError for a bad one
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, e.g. 127.0.0.1:8090, not {value!r}")
    return host, int(port)
