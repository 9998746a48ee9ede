"""Where the text people write enters a prompt: it stays their words, never markup.

A chat format writes the markup (roles, turn ends); everything else in a prompt is text someone
wrote: each message, the model's replies, a chat's /system prompt (any user of a private chat
sets it) and its summary. Three ways such text could pass for structure, each closed here:

- control tokens (`<|im_end|>`, `</s>`): local engines tokenize this text with special=False, so
  they are plain characters there; an OpenAI-compatible server parses them in message content;
- markers that are plain text in their format (Alpaca's `### Response:`, Llama 2's `[INST]`,
  Vicuna's `USER:`), which special=False cannot help with;
- a group transcript's `Name: ...` lines (`prompt.normalize_turns` writes those).

Every spelling of markup, of every chat-model family and of the format at hand, gets a zero-width
space after its first character: the model reads the same characters, but not the markup's
token sequence. Every chat format and the OpenAI messages go through `TextGuard.conversation`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from bot.core.prompt import Turn, normalize_turns

BREAK = "\u200b"
"""A zero-width space: put inside a marker, it leaves the text as it reads."""

FAMILY_MARKUP = (
    r"<\|[^<>|\s]{1,40}\|>"  # ChatML <|im_start|>, Llama 3 <|start_header_id|>, Phi <|user|>
    r"|<\uff5c[^<>\uff5c\s]{1,40}\uff5c>"  # DeepSeek's full-width <｜User｜>, <｜Assistant｜>
    r"|</?s>|<(?:unk|pad|eos|bos)>"  # SentencePiece's BOS and EOS spelled out
    r"|<(?:start|end)_of_turn>"  # Gemma
    r"|\[/?[A-Z][A-Z_]{1,30}\]"  # Mistral's and Llama 2's [INST] [/INST], [SYSTEM_PROMPT]
    r"|<</?SYS>>"  # Llama 2's system block
    r"|(?i:#{3,}[ \t]*[^\W\d_][^\n:#\uff1a]{0,40}[:\uff1a])"  # Alpaca's ### Instruction:
)
"""The markup of the chat-model families, whichever template or server is used: a user who
addresses an OpenAI-compatible server does not know its template, and neither do we."""


class TextGuard:
    """Breaks every markup spelling in the texts of a conversation: the families' and
    `markers`, literal strings a chat format writes (found in its template)."""

    def __init__(self, markers: Iterable[str] = ()) -> None:
        literals = sorted({m for m in markers if len(m) > 1 and BREAK not in m}, key=len,
                          reverse=True)
        self._pattern = re.compile("|".join([*map(re.escape, literals), FAMILY_MARKUP]))

    def text(self, text: str) -> str:
        """`text` with every marker broken; applied again, it changes nothing."""
        while True:
            # A marker may sit inside a longer one (`#### Response:`): again until none is left.
            broken = self._pattern.sub(lambda m: m[0][0] + BREAK + m[0][1:], text)
            if broken == text:
                return text
            text = broken

    def conversation(
        self, system: str | None, turns: Sequence[Turn]
    ) -> tuple[str | None, list[Turn]]:
        """The system text and the turns (`normalize_turns`'s) as a prompt may hold them."""
        guarded = [Turn(turn.role, self.text(turn.text), unfinished=turn.unfinished)
                   for turn in normalize_turns(turns)]
        return (None if system is None else self.text(system)), guarded
