"""Bytes of a text file as text: UTF-8, UTF-16 (with a byte-order mark, or without one where
every other byte is zero) and GB18030 (a superset of GBK and GB2312, what Chinese Windows
saves), tried in that order, strictly: a file none of them reads whole is refused rather than
read as mojibake."""

from __future__ import annotations

import codecs

from bot.i18n import _
from bot.reading.document import ReadingError

SAMPLE = 4096
"""Bytes looked at to tell text from binary."""


class BinaryFile(ReadingError):
    """The bytes are not text (an executable, an archive, an image sent as a file)."""


class UnknownEncoding(ReadingError):
    """Text in an encoding none of UTF-8, UTF-16 and GB18030 reads."""


def decode_text(data: bytes) -> str:
    """`data` as text, without a byte-order mark and with `\\n` line ends."""
    text = _decode(data)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        return _strict(data[len(codecs.BOM_UTF8):], "utf-8")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _strict(data, "utf-16")
    utf16 = _utf16_without_bom(data[:SAMPLE])
    if utf16 is not None:
        return _strict(data, utf16)
    if _looks_binary(data[:SAMPLE]):
        raise BinaryFile(_("This file is not text (it looks like a program, an archive or a "
                           "picture), so I cannot read it."))
    for encoding in ("utf-8", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise UnknownEncoding(_("I cannot tell this file's text encoding (I read UTF-8, UTF-16 and "
                            "GB18030/GBK); save it as UTF-8 and send it again."))


def _strict(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise UnknownEncoding(_("I cannot tell this file's text encoding (I read UTF-8, UTF-16 "
                                "and GB18030/GBK); save it as UTF-8 and send it again.")) from None


def _utf16_without_bom(sample: bytes) -> str | None:
    """"utf-16-le" or "-be" where zero bytes fill one column of the sample (Latin text in
    UTF-16); Chinese UTF-16 without a BOM is not told from other bytes, and is not guessed."""
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) > 0.4 * len(odd) and even.count(0) < 0.05 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.4 * len(even) and odd.count(0) < 0.05 * len(odd):
        return "utf-16-be"
    return None


def _looks_binary(sample: bytes) -> bool:
    """A zero byte, or many control characters other than tab, line ends and form feed."""
    if b"\x00" in sample:
        return True
    controls = sum(1 for byte in sample if byte < 32 and byte not in b"\t\n\r\f\x1b")
    return controls > 0.1 * max(len(sample), 1)
