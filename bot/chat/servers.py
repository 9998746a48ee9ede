"""What the bot's admins are told about the model servers of the remote engine."""

from __future__ import annotations

from bot.engine.base import ServerStatus
from bot.i18n import _


def server_status_text(status: ServerStatus) -> str:
    """The alert sent to the admins when a model server goes down or comes back, in the
    current language."""
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
