"""A document as read: its text in sections, what its places are counted in, and the error
a file that cannot be read raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.errors import UserError
from bot.reading.passages import Section, Unit

DocumentKind = Literal["text", "pdf", "docx"]


class ReadingError(UserError):
    """A file that cannot be read; the text says why (and what to send instead)."""


@dataclass(frozen=True)
class ExtractedDocument:
    """A document's text as read: its sections (a PDF's pages, else one), what its places are
    counted in, its pages (PDF), and whether it was cut at the character limit."""

    kind: DocumentKind
    unit: Unit
    sections: list[Section]
    pages: int | None
    chars: int
    truncated: bool

    @property
    def words(self) -> int:
        """Words, counting each CJK character as one (as Chinese word counts do)."""
        count = 0
        for section in self.sections:
            for token in section.text.split():
                cjk = sum(1 for c in token if "\u3400" <= c <= "\u9fff")
                other = any(c.isalnum() and not "\u3400" <= c <= "\u9fff" for c in token)
                count += cjk + other
        return count


def keep_within(sections: list[Section], max_chars: int) -> tuple[list[Section], bool]:
    """The sections cut to `max_chars` characters in all, and whether anything was cut."""
    kept: list[Section] = []
    left = max_chars
    for section in sections:
        if left <= 0:
            return kept, True
        if len(section.text) > left:
            kept.append(Section(section.text[:left], section.page))
            return kept, True
        kept.append(section)
        left -= len(section.text)
    return kept, False
