"""A document's text cut into passages: runs of whole lines of about PASSAGE_CHARS characters,
each knowing where it stands (page, or first and last line or paragraph) so that the model can
cite it. Short enough that several fit a question's budget, long enough to hold a thought."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

PASSAGE_CHARS = 480
"""Characters a passage holds at most (a longer line is cut at a sentence's or word's end)."""
Unit = Literal["page", "line", "paragraph"]
"""What a document's places are counted in: PDF pages, lines of a text file, Word paragraphs."""
_SENTENCE_END = re.compile(r"(?<=[.!?。！？；;])\s*")


@dataclass(frozen=True)
class Section:
    """A part of a document as read: a PDF's page (`page`), or the whole text of another."""

    text: str
    page: int | None = None


@dataclass(frozen=True)
class Passage:
    """A piece of a document; `first`..`last` are lines (or paragraphs) of the whole text, or of
    its page for a PDF."""

    seq: int
    text: str
    page: int | None
    first: int
    last: int


def split_passages(sections: Sequence[Section], *, limit: int = PASSAGE_CHARS) -> list[Passage]:
    """The passages of a document, in order; blank lines are not kept in them, and a passage
    ends at a blank line once it is half full (paragraphs stay together where they can)."""
    passages: list[Passage] = []
    for section in sections:
        lines: list[str] = []
        first = last = size = 0
        for number, line in _numbered_pieces(section.text, limit):
            blank = not line.strip()
            if lines and (size + len(line) > limit or (blank and size >= limit // 2)):
                passages.append(Passage(len(passages), "\n".join(lines), section.page, first,
                                        last))
                lines, size = [], 0
            if blank:
                continue
            if not lines:
                first = number
            lines.append(line.rstrip())
            size += len(line) + 1
            last = number
        if lines:
            passages.append(Passage(len(passages), "\n".join(lines), section.page, first, last))
    return passages


def _numbered_pieces(text: str, limit: int) -> Iterator[tuple[int, str]]:
    """Each line with its number (from 1), a line longer than `limit` in pieces."""
    for number, line in enumerate(text.split("\n"), start=1):
        while len(line) > limit:
            cut = _cut_at(line, limit)
            yield number, line[:cut]
            line = line[cut:].lstrip()
        yield number, line


def _cut_at(line: str, limit: int) -> int:
    """Where to cut a long line: the last sentence end within `limit`, else the last space,
    else `limit` (Chinese has no spaces)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(line, 0, limit) if 0 < m.end() <= limit]
    if ends and ends[-1] > limit // 3:
        return ends[-1]
    space = line.rfind(" ", 0, limit)
    return space if space > limit // 3 else limit


def passage_label(name: str, passage: Passage, unit: Unit) -> str:
    """Where a passage stands, to cite it: `report.pdf, page 3`, `notes.txt, lines 10-25`."""
    if unit == "page" and passage.page is not None:
        return f"{name}, page {passage.page}"
    plural = {"line": "lines", "paragraph": "paragraphs", "page": "pages"}[unit]
    if passage.first == passage.last:
        return f"{name}, {unit} {passage.first}"
    return f"{name}, {plural} {passage.first}-{passage.last}"
