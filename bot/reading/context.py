"""What a question brings along, and the frame it reaches the model in.

A question's context is a list of `ContextItem`s stored with it (JSON in `turns.context`): the
message it replies to (or the part quoted), the origin of a forwarded message, the text read
from an image, the document it is about. Passages of documents are chosen anew for each reply
and never stored. Every framed text is quoted line by line (`> `), so nothing in it (someone
else's message, a file, text in a picture) can start a line of its own: it can neither end the
frame nor pass for a transcript's `Name: ...` line; markup inside it is broken like any text
people write (`bot.core.guard`, applied to the whole turn). Frames are English, like every
instruction the model reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Literal

from bot.core.prompt import clean_name

ContextKind = Literal["reply", "forward", "image", "document", "voice"]
QUOTE = "> "


@dataclass(frozen=True, kw_only=True)
class ContextItem:
    """One thing a question brings along.

    reply: `text` of the message replied to (only the part quoted when `quoted`), by `author`
    (`by_bot`: the bot's own message). forward: the question is a message forwarded from
    `author`. image: `text` read from an image (`author`'s, when the question replies to it).
    document: the question is about the chat's document `document_id` named `name`. voice:
    `text` heard in a voice note (`author`'s).
    """

    kind: ContextKind
    text: str = ""
    author: str | None = None
    by_bot: bool = False
    quoted: bool = False
    name: str | None = None
    document_id: int | None = None


@dataclass(frozen=True)
class FramedPassage:
    """A passage chosen for a question: its label (document and page or lines) and text."""

    label: str
    text: str


def encode_context(items: Sequence[ContextItem]) -> str | None:
    """The items as stored (None: none); fields left at their defaults are left out."""
    if not items:
        return None
    defaults = ContextItem(kind="reply")
    return json.dumps(
        [{k: v for k, v in asdict(item).items() if k == "kind" or v != getattr(defaults, k)}
         for item in items],
        ensure_ascii=False,
    )


def decode_context(stored: str | None) -> list[ContextItem]:
    """The items of a stored context; unknown fields and malformed entries are skipped."""
    if not stored:
        return []
    try:
        raw = json.loads(stored)
    except ValueError:
        return []
    known = {f.name for f in fields(ContextItem)}
    items = []
    for entry in raw if isinstance(raw, list) else []:
        if isinstance(entry, dict) and entry.get("kind") in ("reply", "forward", "image",
                                                              "document", "voice"):
            items.append(ContextItem(**{k: v for k, v in entry.items() if k in known}))
    return items


def quoted(text: str) -> str:
    """Every line of `text` behind the quote mark: no line of it stands on its own."""
    return "\n".join(QUOTE + line.rstrip() for line in text.strip().splitlines() or [""])


def _who(item: ContextItem) -> str:
    return "your (the assistant's) earlier message" if item.by_bot else (
        f"a message by {clean_name(item.author or '')}")


def _heading(item: ContextItem) -> str:
    if item.kind == "reply":
        return f"[in reply to {_who(item)}{', quoting this part' if item.quoted else ''}:]"
    if item.kind == "forward":
        return f"[a message forwarded from {clean_name(item.author or '')}:]"
    if item.kind == "image":
        whose = f" in {_who(item)}" if item.author or item.by_bot else ""
        return f"[text read from the image{whose}:]"
    if item.kind == "voice":
        return f"[what was said in the voice note{' in ' + _who(item) if item.author else ''}:]"
    return f"[about the document {document_name(item.name)}, in this chat's documents]"


def document_name(name: str | None) -> str:
    """A file's name as a frame writes it: one line, quoted, without brackets."""
    cleaned = " ".join((name or "document").replace("[", "(").replace("]", ")").split())
    return f'"{cleaned[:80]}"'


def render_question(
    text: str, items: Sequence[ContextItem], passages: Sequence[FramedPassage] = ()
) -> str:
    """The question as the model reads it: what was asked, then each item in its frame (a
    forwarded message's own text inside its frame), then the passages chosen for it."""
    parts: list[str] = []
    forward = any(item.kind == "forward" for item in items)
    if text.strip() and not forward:
        parts.append(text.strip())
    for item in items:
        heading = _heading(item)
        if item.kind == "forward":
            parts.append(heading + "\n" + quoted(text))
        elif item.kind == "document":
            parts.append(heading)
        else:
            parts.append(heading + "\n" + quoted(item.text))
    if passages:
        parts.append(passages_block(passages))
    return "\n".join(parts)


def passages_block(passages: Sequence[FramedPassage]) -> str:
    """The passages chosen for a question, each under its label, for the model to cite."""
    lines = ["[passages of this chat's documents that may help, each labelled to cite:]"]
    for passage in passages:
        lines.append(f"[{passage.label}]")
        lines.append(quoted(passage.text))
    return "\n".join(lines)
