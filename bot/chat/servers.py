"""What the bot's admins are told about the model servers of the remote engine, and the one
rule for every such text: a password written into a URL (`user:password@host`) is never shown."""

from __future__ import annotations

import re

from bot.engine.base import ServerStatus
from bot.i18n import _

_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]*):[^\s/@]*@")
"""`scheme://user:password@` (the password up to the `@`)."""


def without_passwords(text: str) -> str:
    """`text` with the password of every URL in it masked (`user:***@host`): the engine names
    servers so already, this holds for what their errors say too."""
    return _PASSWORD.sub(r"\g<head>:***@", text)


def server_status_text(status: ServerStatus) -> str:
    """The alert sent to the admins when a model server goes down or comes back, in the
    current language (no password shown)."""
    return without_passwords(_status_text(status))


def _status_text(status: ServerStatus) -> str:
    if status.up:
        return _("✅ Model server {url} is back ({up} of {servers} servers up).",
                 url=status.url, up=status.servers_up, servers=status.servers)
    if status.servers_up:
        return _("⚠️ Model server {url} is down ({reason}). Its chats moved to the other servers "
                 "({up} of {servers} up); it is checked until it answers again.",
                 url=status.url, reason=status.reason, up=status.servers_up,
                 servers=status.servers)
    return _("🛑 Every model server is down (the last: {url}: {reason}). Messages are kept and "
             "answered as soon as one is back.", url=status.url, reason=status.reason)
