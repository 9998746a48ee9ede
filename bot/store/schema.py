"""SQLAlchemy tables: chats with their settings, every turn of every conversation, who may use
the bot, and how much each person used it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bot.core.knobs import KNOBS


def utcnow() -> datetime:
    return datetime.now(UTC)


def _storable(value: str | None, length: int | None) -> str | None:
    if value is None:
        return None
    value = value.replace("\x00", "\ufffd")
    return value[:length] if length else value


class UtcDateTime(TypeDecorator[datetime]):
    """A moment in UTC, read back aware on every database (SQLite keeps no time zone and
    would give naive datetimes where PostgreSQL gives aware ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if isinstance(value, datetime) and value.tzinfo else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value


class UserText(TypeDecorator[str]):
    """Text written by users or the model, stored the same on every database: PostgreSQL
    refuses NUL characters (SQLite keeps them), so they become U+FFFD."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return _storable(value, None)


class UserName(TypeDecorator[str]):
    """A name from Telegram (a chat's title, a speaker), cut to its column's length: only
    PostgreSQL enforces the length, and a full name may be 129 characters."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return _storable(value, cast(String, self.impl_instance).length)


class Base(DeclarativeBase):
    pass


class ChatRow(Base):
    """A Telegram chat (or the console). Knob columns left NULL follow the configured default;
    read and write them by knob name (`stored_knobs`, `set_chat_values` in the repository).

    A chat's settings live in this row; rows of other tables that refer to it are its
    conversation, which /forget deletes (`bot.store.chat_data`)."""

    __tablename__ = "chats"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str | None] = mapped_column(UserName(256))
    # One nullable column per knob of bot.core.knobs, named after it (NULL: the default).
    for _knob in KNOBS:
        locals()[_knob.name] = mapped_column(
            _knob.name, {"float": Float, "int": Integer}.get(_knob.kind, String(16)),
            nullable=True,
        )
    del _knob
    system_prompt: Mapped[str | None] = mapped_column(UserText)
    window_start: Mapped[int] = mapped_column(Integer, default=0)
    """Turns with a smaller id were left behind by /reset."""
    parent_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("chats.id", ondelete="CASCADE", name="fk_chats_parent_id")
    )
    """For a topic of a forum group: the group's row (its id is then not Telegram's, see
    `telegram_id`); the topic's knobs and system prompt left NULL follow the group's."""
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    """For a topic: Telegram's message_thread_id."""
    parent: Mapped[ChatRow | None] = relationship(remote_side=[id], lazy="joined", join_depth=1)
    summary: Mapped[str | None] = mapped_column(UserText)
    """What the model wrote of the turns that left the window (up to `summary_upto`)."""
    summary_upto: Mapped[int | None] = mapped_column(Integer)
    summary_on: Mapped[bool | None] = mapped_column(Boolean)
    """/summary off|on (NULL: on)."""
    language: Mapped[str | None] = mapped_column(String(16))
    """/lang: the interface's language here (NULL: auto, each person's own)."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utcnow, onupdate=utcnow
    )

    __table_args__ = (UniqueConstraint("parent_id", "thread_id", name="uq_chats_parent_thread"),)

    @property
    def telegram_id(self) -> int:
        """The Telegram chat this conversation is in (a topic's is its group's)."""
        return self.parent_id if self.parent_id is not None else self.id


class TurnRow(Base):
    """One message of a conversation: a user's (state pending/answered/failed) or the bot's reply
    (state streaming/complete)."""

    __tablename__ = "turns"
    __table_args__ = (
        Index("ix_turns_chat_id_id", "chat_id", "id"),
        Index("ix_turns_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("chats.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(UserText, default="")
    speaker: Mapped[str | None] = mapped_column(UserName(128))
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    language: Mapped[str | None] = mapped_column(String(16))
    """A question's: the language its asker is answered in (a reply redone after a restart
    speaks it)."""
    reply_to: Mapped[int | None] = mapped_column(Integer, ForeignKey("turns.id"))
    """For a reply: the user turn it answers."""
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    """Telegram message id: the user's message, or the first message of a reply."""
    message_ids: Mapped[str | None] = mapped_column(Text)
    """For a reply: every Telegram message id it spans, comma-separated."""
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    stop_reason: Mapped[str | None] = mapped_column(String(16))
    n_tokens: Mapped[int | None] = mapped_column(Integer)
    thinking: Mapped[str | None] = mapped_column(UserText)
    """For a reply of a thinking model: what it thought before it answered (`text` is the
    answer alone, which later turns and the summary see); for export and /reasoning show."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    redone: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """A question's: how many starts found it unanswered and began its answer again (one that
    crashes the process every time is given up, see `bot.chat.recovery`)."""
    context: Mapped[str | None] = mapped_column(UserText)
    """A question's: what it brings along (the message it replies to, the text read from an
    image, the document it is about), as JSON (`bot.reading.context`)."""
    heard_from: Mapped[str | None] = mapped_column(String(16))
    """A question heard rather than typed (its text is the transcript): "voice", "audio" or
    "video_note" (Telegram), "file" (the console's /listen)."""
    heard_seconds: Mapped[float | None] = mapped_column(Float)
    """How long the audio a heard question came from was (the audio is not kept)."""


class DocumentRow(Base):
    """A file sent to a conversation, read into passages (its bytes are not kept). Questions
    draw on it until /reset leaves it behind (`current`); /forget and the retention period
    delete it."""

    __tablename__ = "documents"
    __table_args__ = (Index("ix_documents_chat_id", "chat_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("chats.id", ondelete="CASCADE", name="fk_documents_chat_id")
    )
    current: Mapped[bool] = mapped_column(Boolean, default=True)
    name: Mapped[str] = mapped_column(UserName(256))
    kind: Mapped[str] = mapped_column(String(16))
    """"text", "pdf" or "docx"."""
    unit: Mapped[str] = mapped_column(String(16))
    """What its passages' places count: "page", "line" or "paragraph"."""
    pages: Mapped[int | None] = mapped_column(Integer)
    words: Mapped[int] = mapped_column(Integer, default=0)
    chars: Mapped[int] = mapped_column(Integer, default=0)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    """Its text was cut at `document_max_chars`."""
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    """The Telegram message that brought it (a reply to that message is about it)."""
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    speaker: Mapped[str | None] = mapped_column(UserName(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class PassageRow(Base):
    """A passage of a document: whole lines of its text, and where they stand (a PDF's page,
    else the first and last line or paragraph)."""

    __tablename__ = "passages"
    __table_args__ = (Index("ix_passages_document_id_seq", "document_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("documents.id", ondelete="CASCADE", name="fk_passages_document_id")
    )
    seq: Mapped[int] = mapped_column(Integer)
    page: Mapped[int | None] = mapped_column(Integer)
    first_line: Mapped[int] = mapped_column(Integer)
    last_line: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(UserText)


class QuantizeJobRow(Base):
    """A `/quantize` run: who asked, what, when, and how it ended (running, done, failed,
    interrupted by a restart)."""

    __tablename__ = "quantize_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    requested_by: Mapped[int | None] = mapped_column(BigInteger)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    progress_message_id: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    qtype: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(UserText)
    size_before: Mapped[int | None] = mapped_column(BigInteger)
    size_after: Mapped[int | None] = mapped_column(BigInteger)
    seconds: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class BotStateRow(Base):
    """Small values the bot keeps across restarts (e.g. the model chosen with /model)."""

    __tablename__ = "bot_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class AccessRow(Base):
    """What was decided about a user or a chat (a user's id is their private chat's): allowed
    (/allow, an Approve, added by someone allowed, or there before access control) or denied."""

    __tablename__ = "access"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    """"user" or "chat" (a group)."""
    allowed: Mapped[bool] = mapped_column(Boolean)
    name: Mapped[str | None] = mapped_column(UserName(256))
    decided_by: Mapped[int | None] = mapped_column(BigInteger)
    """The bot admin (or the allowed user who added the bot to a group); NULL: the terminal or
    the upgrade."""
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AccessRequestRow(Base):
    """Someone not allowed asked (a private message) or added the bot to a group: all that is
    kept of them, for 30 days. A group's request also says who added the bot."""

    __tablename__ = "access_requests"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(UserName(256))
    username: Mapped[str | None] = mapped_column(UserName(64))
    language: Mapped[str | None] = mapped_column(String(16))
    preview: Mapped[str | None] = mapped_column(UserText)
    """The first 200 characters of the first message (a user's request)."""
    added_by: Mapped[int | None] = mapped_column(BigInteger)
    added_by_name: Mapped[str | None] = mapped_column(UserName(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class UsageRow(Base):
    """One person's use of the bot in one chat on one UTC day: questions answered, tokens
    generated for them, messages refused by the fair-use limits. It outlives /forget and the
    retention period (a day's budget must), and holds no text."""

    __tablename__ = "usage"
    __table_args__ = (Index("ix_usage_user_day", "user_id", "day"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """0 where nobody is known (the console, a channel's post)."""
    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """The Telegram chat (a forum topic counts for its group)."""
    questions: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
