"""What the bot's admins are told about the model servers of the remote engine."""

from __future__ import annotations

from bot.engine.base import ServerStatus


def server_status_text(status: ServerStatus) -> str:
    """The alert sent to the admins when a model server goes down or comes back."""
    if status.up:
        return (f"✅ Model server {status.url} is back ({status.servers_up} of {status.servers} "
                "servers up).")
    if status.servers_up:
        return (f"⚠️ Model server {status.url} is down ({status.reason}). Its chats moved to the "
                f"other servers ({status.servers_up} of {status.servers} up); it is checked until "
                "it answers again.")
    return (f"🛑 Every model server is down (the last: {status.url}: {status.reason}). Messages "
            "are kept and answered as soon as one is back.")
