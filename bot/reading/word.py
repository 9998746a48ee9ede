"""A Word .docx's text (python-docx): its paragraphs, then its tables' rows, one per line.
A .docx is a zip file: its entries' sizes are checked before anything is unpacked, so a zip
bomb (a few kilobytes that unpack to gigabytes) is refused, not unpacked."""

from __future__ import annotations

import io
import logging
import zipfile

import docx
from docx.opc.exceptions import PackageNotFoundError

from bot.i18n import _
from bot.reading.document import ExtractedDocument, ReadingError, keep_within
from bot.reading.passages import Section

log = logging.getLogger(__name__)

MAX_UNPACKED = 200 << 20
"""Bytes a .docx may unpack to in all (a 20 MB file of text and pictures stays well below)."""
MAX_RATIO = 200
"""How many times its packed size an entry may unpack to (XML packs about 10:1)."""


class NotADocx(ReadingError):
    """A file named .docx that is not one (not a zip, or a zip without a Word document)."""


class ZipBomb(ReadingError):
    """A .docx that would unpack to far more than any real document."""


def read_docx(data: bytes, *, max_chars: int) -> ExtractedDocument:
    """The document's paragraphs and table rows as lines, up to `max_chars` characters."""
    _check_zip(data)
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        log.info("unreadable .docx: %s", exc)
        raise NotADocx(_("This .docx is not a Word document I can open.")) from None
    lines = [paragraph.text for paragraph in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    text = "\n".join(lines)
    if not text.strip():
        raise ReadingError(_("This Word document has no text in it."))
    kept, cut = keep_within([Section(text)], max_chars)
    return ExtractedDocument("docx", "paragraph", kept, None, len(kept[0].text), cut)


def _check_zip(data: bytes) -> None:
    """Refuse what is not a zip, and a zip whose entries would unpack to too much."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise NotADocx(_("This .docx is not a Word document (it is not even a zip file); "
                         "I cannot read it.")) from None
    with archive:
        entries = archive.infolist()
        total = sum(entry.file_size for entry in entries)
        if total > MAX_UNPACKED or any(
            entry.file_size > MAX_RATIO * max(entry.compress_size, 1024) for entry in entries
        ):
            raise ZipBomb(_("This .docx would unpack to far more than a document holds (a zip "
                            "bomb?), so I did not open it."))
