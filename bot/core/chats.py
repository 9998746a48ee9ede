"""Which chat a message belongs to, and the one rule for whether a chat is a group."""

from __future__ import annotations

from dataclasses import dataclass

GROUP_KINDS = frozenset({"group", "supergroup", "channel"})
"""Telegram chat types shared by several people (`console` and `private` are not)."""


def is_group_kind(kind: str) -> bool:
    return kind in GROUP_KINDS


@dataclass(frozen=True)
class ChatRef:
    """Who and where: enough to create a chat row on first contact. `thread_id`: the topic of
    a forum group, which is a conversation of its own (None: the chat itself)."""

    chat_id: int
    kind: str
    title: str | None = None
    thread_id: int | None = None

    @property
    def is_group(self) -> bool:
        return is_group_kind(self.kind)


def summary_key(chat_id: int) -> str:
    """The engine's key for the requests that write a chat's summary (a cache of its own)."""
    return f"summary:{chat_id}"


def cache_keys(chat_id: int) -> tuple[str, ...]:
    """Every key under which an engine may keep something of a chat's conversation (its
    replies' KV cache, its summary's): what /forget and retention drop."""
    return (str(chat_id), summary_key(chat_id))
