"""`alpaca-bot export`: one chat's stored conversation as JSON lines or readable Markdown (a
forum group's topics follow its General conversation)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.chats import is_group_kind
from bot.errors import UserError
from bot.reading.context import decode_context, render_question
from bot.store import chat_data
from bot.store.schema import ChatRow, TurnRow

ExportFormat = Literal["jsonl", "md"]
BOT_NAME = "alpaca-bot"
Conversations = Sequence[tuple[ChatRow, Sequence[TurnRow]]]
"""A chat's conversations (the chat, then its forum topics) and their turns in order."""


def turn_record(turn: TurnRow) -> dict[str, Any]:
    """One turn as exported: who, what, when, how it ended, and where in Telegram."""
    return {
        "id": turn.id,
        "role": turn.role,
        "speaker": turn.speaker,
        "text": turn.text,
        "context": [asdict(item) for item in decode_context(turn.context)] or None,
        "thinking": turn.thinking,
        "heard": {"from": turn.heard_from, "seconds": turn.heard_seconds}
        if turn.heard_from else None,
        "time": turn.created_at.isoformat() if turn.created_at else None,
        "state": turn.state,
        "reply_to": turn.reply_to,
        "message_id": turn.message_id,
        "thread_id": turn.thread_id,
    }


def render_jsonl(conversations: Conversations) -> str:
    return "".join(
        json.dumps(turn_record(turn), ensure_ascii=False) + "\n"
        for _, turns in conversations for turn in turns
    )


def render_markdown(conversations: Conversations) -> str:
    chat = conversations[0][0]
    count = sum(len(turns) for _, turns in conversations)
    lines = [f"# {chat.title or f'chat {chat.id}'}", "",
             f"Chat {chat.id} ({chat.kind}), {count} stored turns; times in UTC.", ""]
    for conversation, turns in conversations:
        if len(conversations) > 1:
            heading = "General" if conversation.parent_id is None else f"Topic {conversation.thread_id}"
            lines += [f"## {heading}", ""]
        lines += _conversation_lines(chat, conversation, turns)
    return "\n".join(lines)


def _conversation_lines(chat: ChatRow, conversation: ChatRow, turns: Sequence[TurnRow]) -> list[str]:
    lines: list[str] = []
    reset_shown = False
    day = ""
    start = conversation.window_start
    for turn in turns:
        if not reset_shown and start and turn.id >= start and any(t.id < start for t in turns):
            lines += ["---", "", "*(/reset: the conversation starts again here)*", ""]
            reset_shown = True
        if turn.created_at is not None and f"{turn.created_at:%Y-%m-%d}" != day:
            day = f"{turn.created_at:%Y-%m-%d}"
            lines += [f"*{day}*", ""]
        note = "" if turn.state in ("answered", "complete") else f" *({turn.state})*"
        if turn.thinking:  # a thinking model's thinking, quoted above its answer
            lines += [f"> {line}" if line.strip() else ">"
                      for line in f"*thinking:* {turn.thinking}".splitlines()] + [""]
        # A question with what it brought along (a replied message, a picture's text) as the
        # model read it.
        text = render_question(turn.text, decode_context(turn.context)) if turn.context else (
            turn.text)
        lines += [f"**{_speaker(chat, turn)}**{_heard(turn)}: {text}{note}", ""]
    return lines


def _heard(turn: TurnRow) -> str:
    """How a question heard rather than typed is marked: 🎤 with what from and how long."""
    if not turn.heard_from:
        return ""
    kind = HEARD_FROM.get(turn.heard_from, turn.heard_from)
    length = f", {turn.heard_seconds:.0f} s" if turn.heard_seconds is not None else ""
    return f" 🎤 *({kind}{length})*"


HEARD_FROM = {"voice": "voice note", "audio": "audio", "video_note": "round video",
              "file": "audio file"}


def _speaker(chat: ChatRow, turn: TurnRow) -> str:
    if turn.role == "assistant":
        return BOT_NAME
    if turn.speaker:
        return turn.speaker
    # Questions in private chats are stored without a name: the chat is the person.
    return (chat.title if not is_group_kind(chat.kind) and chat.title else None) or "user"


async def export_chat(
    sessions: async_sessionmaker[AsyncSession], chat_id: int, fmt: ExportFormat
) -> str:
    """The chat's conversations in `fmt`; UserError for a chat the database does not know."""
    async with sessions() as session:
        found = await chat_data.chat_with_turns(session, chat_id)
    if found is None:
        raise UserError(f"no chat {chat_id} in the database")
    return render_jsonl(found) if fmt == "jsonl" else render_markdown(found)


def write_export(path: Path, text: str) -> None:
    """Write an export private to the bot's user (mode 0600, like the database it comes from),
    whatever the umask and whatever mode a file already there had."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
