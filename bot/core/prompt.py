"""Prompt pieces: conversation turns and the segments a chat format renders them into.

A rendered prompt is a sequence of segments. Template markup (`special=True`) may contain control
tokens such as `<|im_start|>`; user and model text (`special=False`) is always tokenized as plain
text, so a user who types `</s>` or `<|im_end|>` cannot end a turn or forge a role.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Turn:
    """One message of a conversation. `speaker` names the person in group chats.

    `unfinished` marks a last assistant turn the model is to continue: chat formats render it
    open, without the markup that ends a turn.
    """

    role: Role
    text: str
    speaker: str | None = None
    unfinished: bool = field(default=False, kw_only=True)

    @property
    def content(self) -> str:
        """The text as the model sees it: prefixed with the speaker's name in group chats."""
        if self.role == "user" and self.speaker:
            return f"{self.speaker}: {self.text}"
        return self.text


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
    turn, because many chat templates refuse two user turns in a row. A leading assistant turn is
    dropped: a window must start with a question. A turn keeps `unfinished` only if it is the
    last, an assistant's, with text: anything else is a closed turn.
    """
    result: list[Turn] = []
    for turn in turns:
        if not result and turn.role == "assistant":
            continue
        if result and result[-1].role == turn.role:
            previous = result[-1]
            result[-1] = Turn(turn.role, previous.content + "\n" + turn.content,
                              unfinished=turn.unfinished)
        else:
            result.append(Turn(turn.role, turn.content, unfinished=turn.unfinished))
    for index, turn in enumerate(result):
        last = index == len(result) - 1
        if turn.unfinished and not (last and turn.role == "assistant" and turn.text.strip()):
            result[index] = Turn(turn.role, turn.text)
    return result


def is_open(turns: Sequence[Turn]) -> bool:
    """Whether normalized `turns` end with an unfinished assistant turn (rendered open)."""
    return bool(turns) and turns[-1].unfinished
