"""`alpaca-bot export`: one chat's stored conversation as JSON lines or readable Markdown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.chats import is_group_kind
from bot.errors import UserError
from bot.store import chat_data
from bot.store.schema import ChatRow, TurnRow

ExportFormat = Literal["jsonl", "md"]
FORMATS: tuple[ExportFormat, ...] = ("jsonl", "md")
BOT_NAME = "alpaca-bot"


def turn_record(turn: TurnRow) -> dict[str, Any]:
    """One turn as exported: who, what, when, and how it ended."""
    return {
        "id": turn.id,
        "role": turn.role,
        "speaker": turn.speaker,
        "text": turn.text,
        "time": turn.created_at.isoformat() if turn.created_at else None,
        "state": turn.state,
        "reply_to": turn.reply_to,
        "message_id": turn.message_id,
    }


def render_jsonl(chat: ChatRow, turns: Sequence[TurnRow]) -> str:
    return "".join(json.dumps(turn_record(turn), ensure_ascii=False) + "\n" for turn in turns)


def render_markdown(chat: ChatRow, turns: Sequence[TurnRow]) -> str:
    title = chat.title or f"chat {chat.id}"
    lines = [f"# {title}", "", f"Chat {chat.id} ({chat.kind}), {len(turns)} stored turns.", ""]
    reset_shown = False
    day = ""
    for turn in turns:
        if not reset_shown and chat.window_start and turn.id >= chat.window_start and any(
            earlier.id < chat.window_start for earlier in turns
        ):
            lines += ["---", "", "*(/reset: the conversation starts again here)*", ""]
            reset_shown = True
        if turn.created_at is not None and f"{turn.created_at:%Y-%m-%d}" != day:
            day = f"{turn.created_at:%Y-%m-%d}"
            lines += [f"## {day} (UTC)", ""]
        note = "" if turn.state in ("answered", "complete") else f" *({turn.state})*"
        lines += [f"**{_speaker(chat, turn)}**: {turn.text}{note}", ""]
    return "\n".join(lines)


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
    """The chat's conversation in `fmt`; UserError for a chat the database does not know."""
    async with sessions() as session:
        found = await chat_data.chat_with_turns(session, chat_id)
    if found is None:
        raise UserError(f"no chat {chat_id} in the database")
    chat, turns = found
    return render_jsonl(chat, turns) if fmt == "jsonl" else render_markdown(chat, turns)
