"""A PDF's text layer, page by page (pypdf). A PDF made of scanned pages has none, and one
locked with a password cannot be opened: each is refused with a line saying so."""

from __future__ import annotations

import io
import logging

from pypdf import PdfReader
from pypdf.errors import PdfReadError, PyPdfError

from bot.i18n import _
from bot.reading.document import ExtractedDocument, ReadingError, keep_within
from bot.reading.passages import Section

log = logging.getLogger(__name__)


class EncryptedPdf(ReadingError):
    """A PDF that needs a password."""


class ScannedPdf(ReadingError):
    """A PDF without a text layer (pictures of pages)."""


def read_pdf(data: bytes, *, max_chars: int) -> ExtractedDocument:
    """The text of each page, stopping once `max_chars` characters are read."""
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not _opens_without_password(reader):
            raise EncryptedPdf(_("This PDF is locked with a password, so I cannot read it; send "
                                 "a copy without the password."))
        pages = len(reader.pages)
        sections: list[Section] = []
        read = 0
        for number, page in enumerate(reader.pages, start=1):
            if read > max_chars:
                break
            text = (page.extract_text() or "").replace("\r\n", "\n").strip()
            read += len(text)
            sections.append(Section(text, number))
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError) as exc:
        log.info("unreadable PDF: %s", exc)
        raise ReadingError(_("This PDF is damaged or not a PDF; I cannot read it.")) from None
    if not any(section.text for section in sections):
        raise ScannedPdf(_("This PDF has no text layer (its pages are pictures, like a scan), "
                           "so I cannot read it as a document; send the pages as photos and I "
                           "will read their text."))
    kept, cut = keep_within([s for s in sections if s.text], max_chars)
    return ExtractedDocument("pdf", "page", kept, pages, sum(len(s.text) for s in kept),
                             cut or len(sections) < pages)


def _opens_without_password(reader: PdfReader) -> bool:
    """Many PDFs are encrypted with an empty password (only to forbid printing or editing):
    those open."""
    try:
        return bool(reader.decrypt(""))
    except Exception:  # a cipher pypdf cannot do without an optional package: locked to us
        return False
