"""Prompt pieces: conversation turns and the segments a chat format renders them into.

A rendered prompt is a sequence of segments. Template markup (`special=True`) may contain control
tokens such as `<|im_start|>`; user and model text (`special=False`) is always tokenized as plain
text, so a user who types `</s>` or `<|im_end|>` cannot end a turn or forge a role.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Turn:
    """One message of a conversation. `speaker` names the person in group chats, `speaker_id`
    tells people of the same name apart (their Telegram user id; None: known by name only).

    `unfinished` marks a last assistant turn the model is to continue: chat formats render it
    open, without the markup that ends a turn.
    """

    role: Role
    text: str
    speaker: str | None = None
    unfinished: bool = field(default=False, kw_only=True)
    speaker_id: int | None = field(default=None, kw_only=True)

    @property
    def content(self) -> str:
        """The text as the model sees it: a transcript line naming the speaker in group chats."""
        if self.role == "user" and self.speaker:
            return speaker_line(clean_name(self.speaker), self.text)
        return self.text


MAX_NAME = 64
"""Characters of a display name a transcript keeps."""
NAME_BREAKS = str.maketrans({c: " " for c in ":\uff1a\ufe55\ufe13#\uff03"})
"""A transcript line is `name: text`, and same-named people are told apart as `name#2`: a name
holding a colon (ASCII or full-width) or `#` could spell another person's line or number."""


def clean_name(name: str) -> str:
    """A display name as a transcript writes it: one line, without the characters that delimit
    a speaker (see NAME_BREAKS), at most MAX_NAME characters; "someone" if nothing is left."""
    kept = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in name)
    cleaned = " ".join(kept.translate(NAME_BREAKS).split())[:MAX_NAME].strip()
    return cleaned or "someone"


def speaker_line(label: str, text: str) -> str:
    """`label: text`, the text's later lines indented: a line starting a transcript entry
    always names who wrote it, and no one's message can start a line of its own."""
    first, *rest = text.strip().split("\n")
    return "\n".join([f"{label}: {first}", *(f"  {line}" if line.strip() else "" for line in rest)])


def speaker_labels(turns: Sequence[Turn]) -> dict[tuple[str, int | None], str]:
    """The label of each (speaker, speaker_id) among the user turns: the cleaned name, or where
    several people share it (display names are not unique, and anyone can take another's),
    the name numbered in order of appearance, `Bob#1`, `Bob#2`. People are told apart by
    `speaker_id`; those without one by name. Only the turns given count."""
    people: dict[str, list[object]] = {}
    for turn in turns:
        if turn.role == "user" and turn.speaker is not None:
            same = people.setdefault(_name_key(turn.speaker), [])
            if _person(turn) not in same:
                same.append(_person(turn))
    labels: dict[tuple[str, int | None], str] = {}
    for turn in turns:
        if turn.role == "user" and turn.speaker is not None:
            same = people[_name_key(turn.speaker)]
            name = clean_name(turn.speaker)
            labels[turn.speaker, turn.speaker_id] = (
                name if len(same) == 1 else f"{name}#{same.index(_person(turn)) + 1}"
            )
    return labels


def _name_key(speaker: str) -> str:
    """Names a reader would take for the same name compare equal."""
    return unicodedata.normalize("NFKC", clean_name(speaker)).casefold()


def _person(turn: Turn) -> object:
    return ("id", turn.speaker_id) if turn.speaker_id is not None else ("name", _name_key(
        turn.speaker or ""))


@dataclass(frozen=True)
class Segment:
    """A piece of a prompt; `special` marks template markup allowed to contain control tokens."""

    text: str
    special: bool


Prompt = tuple[Segment, ...]


def prompt_text(prompt: Prompt) -> str:
    """The prompt as one string (for logs, the console's --verbose-prompt and tests)."""
    return "".join(segment.text for segment in prompt)


def merge_segments(segments: Iterable[Segment]) -> Prompt:
    """Join neighbours of the same kind and drop empty pieces."""
    merged: list[Segment] = []
    for segment in segments:
        if not segment.text:
            continue
        if merged and merged[-1].special == segment.special:
            merged[-1] = Segment(merged[-1].text + segment.text, segment.special)
        else:
            merged.append(segment)
    return tuple(merged)


def normalize_turns(turns: Sequence[Turn]) -> list[Turn]:
    """Make turns alternate user/assistant, starting with a user turn.

    Several user messages in a row (a group talking, or a reply that failed) are joined into one
    turn, because many chat templates refuse two user turns in a row. In a group (any user turn
    names its speaker) user turns become a transcript: each message a `speaker_line` under its
    speaker's label from `speaker_labels`, so no message reads as another person's. A leading
    assistant turn is dropped: a window must start with a question. A turn keeps `unfinished`
    only if it is the last, an assistant's, with text: anything else is a closed turn.
    """
    group = any(turn.role == "user" and turn.speaker for turn in turns)
    if group:  # a message without a name is someone's too, never a line of its own
        turns = [Turn("user", t.text, t.speaker or "someone", speaker_id=t.speaker_id)
                 if t.role == "user" else t for t in turns]
    labels = speaker_labels(turns) if group else {}
    result: list[Turn] = []
    for turn in turns:
        if not result and turn.role == "assistant":
            continue
        text = turn.text
        if group and turn.role == "user":
            text = speaker_line(labels[turn.speaker or "", turn.speaker_id], turn.text)
        if result and result[-1].role == turn.role:
            result[-1] = Turn(turn.role, result[-1].text + "\n" + text,
                              unfinished=turn.unfinished)
        else:
            result.append(Turn(turn.role, text, unfinished=turn.unfinished))
    for index, turn in enumerate(result):
        last = index == len(result) - 1
        if turn.unfinished and not (last and turn.role == "assistant" and turn.text.strip()):
            result[index] = Turn(turn.role, turn.text)
    return result


def is_open(turns: Sequence[Turn]) -> bool:
    """Whether normalized `turns` end with an unfinished assistant turn (rendered open)."""
    return bool(turns) and turns[-1].unfinished
