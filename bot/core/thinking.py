"""A thinking model's reply split into its thinking and its answer, as the text streams.

Models such as Qwen3, QwQ and DeepSeek-R1's distills write `<think> ... </think>` before they
answer, or have the prompt open the block for them. `ThinkingSplitter` is the one home of the
rule that tells the two apart: it sees the reply's text piece by piece (a tag may arrive split
across tokens), holds back what could be the start of a tag so a tag never reaches either side,
and counts the tokens of each side, which is what a thinking budget is measured in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

DEFAULT_TAGS = ("<think>", "</think>")


@dataclass(frozen=True)
class ThinkingTags:
    """The markers around a model's thinking (Qwen3's, QwQ's and DeepSeek-R1's by default)."""

    open: str = DEFAULT_TAGS[0]
    close: str = DEFAULT_TAGS[1]

    def __post_init__(self) -> None:
        if not self.open or not self.close or self.open == self.close:
            raise ValueError("thinking tags must be two different, non-empty strings")

    @property
    def closing(self) -> str:
        """What an engine writes to close a block the model is still in (the budget ran out):
        the closing tag on a line of its own, and the blank line models put before the answer."""
        return f"\n{self.close}\n\n"


THINK_TAGS = ThinkingTags()
"""`<think>` and `</think>`."""


@dataclass(frozen=True, kw_only=True)
class Thinking:
    """What a request tells its engine about the reply's thinking."""

    tags: ThinkingTags = THINK_TAGS
    opened: bool = False
    """The prompt opened a block: the reply starts inside it."""
    budget: int = -1
    """Tokens the thinking may take before the engine closes the block itself and the model
    answers; -1: no limit but the context."""
    quiet: bool = False
    """The chat asked the model not to think: a server that applies its own chat template is
    told so (a prompt rendered here already says it)."""


class Part(NamedTuple):
    """A piece of the reply: thinking or answer."""

    text: str
    thinking: bool


class ThinkingSplitter:
    """Splits one reply's text into thinking and answer; see the module's docstring.

    Tags are recognised wherever they come: text before a block is answer, a second block is
    thinking again, and a stray closing tag (a model that thinks without writing the opening
    one) is dropped. Neither side ever shows a tag.
    """

    def __init__(self, tags: ThinkingTags = THINK_TAGS, *, opened: bool = False) -> None:
        self.tags = tags
        self.thinking = opened
        """Inside a block now (as far as the text fed so far shows)."""
        self.answer = ""
        self.thought = ""
        self.n_thinking = 0
        """Tokens fed while inside a block (a token that opens or closes one counts here)."""
        self.n_answer = 0
        self._held = ""

    def feed(self, text: str, *, tokens: int = 1) -> list[Part]:
        """Add the text of `tokens` tokens; returns the pieces now safe to show, in order."""
        was_thinking = self.thinking
        parts = self._split(self._held + text)
        if was_thinking or self.thinking or any(part.thinking for part in parts):
            self.n_thinking += tokens
        else:
            self.n_answer += tokens
        return self._keep(parts)

    def thought_text(self, text: str, *, tokens: int = 1) -> list[Part]:
        """Add thinking a server sent apart from the answer (OpenAI's `reasoning_content`)."""
        self.n_thinking += tokens
        return self._keep([Part(text, True)] if text else [])

    def end_block(self) -> list[Part]:
        """Leave the block whatever the text says (the engine closed it): what was held back
        goes to the thinking."""
        parts = self.finish()
        self.thinking = False
        return parts

    def finish(self) -> list[Part]:
        """The reply ended: release what was held back (it was no tag) to the current side."""
        held, self._held = self._held, ""
        return self._keep([Part(held, self.thinking)] if held else [])

    def budget_spent(self, budget: int) -> bool:
        """Whether the reply is inside a block that has used up `budget` tokens (-1: never)."""
        return self.thinking and 0 <= budget <= self.n_thinking

    def _split(self, text: str) -> list[Part]:
        parts: list[Part] = []
        tags = (self.tags.open, self.tags.close)
        while True:
            found = [(text.find(tag), tag) for tag in tags]
            hits = [(index, tag) for index, tag in found if index >= 0]
            if not hits:
                held = _held_back(text, tags)
                if len(text) > held:
                    parts.append(Part(text[: len(text) - held], self.thinking))
                self._held = text[len(text) - held :]
                return parts
            index, tag = min(hits)
            if index:
                parts.append(Part(text[:index], self.thinking))
            self.thinking = tag == self.tags.open
            text = text[index + len(tag) :]

    def _keep(self, parts: list[Part]) -> list[Part]:
        merged: list[Part] = []
        for part in parts:
            if not part.text:
                continue
            if part.thinking:
                self.thought += part.text
            else:
                self.answer += part.text
            if merged and merged[-1].thinking == part.thinking:
                merged[-1] = Part(merged[-1].text + part.text, part.thinking)
            else:
                merged.append(part)
        return merged


def _held_back(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of one of the tags."""
    held = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), held, -1):
            if text.endswith(tag[:size]):
                held = size
                break
    return held
