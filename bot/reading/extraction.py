"""A document's text from its bytes: text files, PDF (its text layer, with pypdf) and Word
.docx (python-docx), kept up to `document_max_chars`. Blocking (a thread's work); each input
it cannot read raises a `ReadingError` whose text says why in one line.
"""

from __future__ import annotations

from pathlib import PurePath

from bot.i18n import _
from bot.reading.decoding import decode_text
from bot.reading.document import DocumentKind, ExtractedDocument, ReadingError
from bot.reading.passages import Section
from bot.reading.pdf import read_pdf
from bot.reading.word import read_docx

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff"})
"""Pictures sent as files (an uncompressed screenshot): read like photos."""
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
LEGACY_SUFFIXES = frozenset({".doc", ".xls", ".ppt", ".xlsx", ".pptx", ".odt", ".rtf", ".pages"})
"""Office files other than .docx: not read (said so, instead of "not text")."""


def is_image(name: str | None, mime: str | None) -> bool:
    """Whether a file sent as a document is a picture."""
    return (mime or "").lower() in IMAGE_TYPES or PurePath(name or "").suffix.lower() in (
        IMAGE_SUFFIXES)


def kind_of(name: str | None, mime: str | None) -> DocumentKind:
    """How to read a file: by its name's suffix, else its MIME type; anything else as text
    (decoding tells text from binary)."""
    suffix, mime = PurePath(name or "").suffix.lower(), (mime or "").lower()
    if suffix == ".pdf" or (not suffix and mime == "application/pdf"):
        return "pdf"
    if suffix == ".docx" or (not suffix and mime == DOCX_TYPE):
        return "docx"
    if suffix in LEGACY_SUFFIXES:
        raise ReadingError(_("I read text files, PDF and Word .docx, not {suffix} files; save "
                             "it as .docx, PDF or text and send it again.", suffix=suffix))
    return "text"


def extract(name: str | None, mime: str | None, data: bytes, *, max_chars: int
            ) -> ExtractedDocument:
    """The text of a file; ReadingError (or a `bot.reading.decoding` error) if it has none."""
    kind = kind_of(name, mime)
    if kind == "pdf":
        return read_pdf(data, max_chars=max_chars)
    if kind == "docx":
        return read_docx(data, max_chars=max_chars)
    text = decode_text(data)
    if not text.strip():
        raise ReadingError(_("This file is empty: there is no text in it to read."))
    kept = text[:max_chars]
    return ExtractedDocument("text", "line", [Section(kept)], None, len(kept),
                             len(text) > max_chars)
