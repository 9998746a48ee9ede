"""Text files' bytes as text: UTF-8, UTF-16 with and without a BOM, GB18030/GBK; binary files
and unknown encodings refused with one line."""

from __future__ import annotations

import codecs

import pytest

from bot.reading.decoding import BinaryFile, UnknownEncoding, decode_text

CHINESE = "数据库连接失败，请检查配置文件。\n第二行：端口 5432"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "gb18030", "gbk"])
def test_chinese_text_in_each_encoding(encoding: str) -> None:
    assert decode_text(CHINESE.encode(encoding)) == CHINESE


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_told_by_its_zero_bytes(encoding: str) -> None:
    text = "Llamas and alpacas\nare camelids. Ünïcode too."
    assert decode_text(text.encode(encoding)) == text


def test_a_bom_and_windows_line_ends_go() -> None:
    assert decode_text(codecs.BOM_UTF8 + b"one\r\ntwo\rthree") == "one\ntwo\nthree"


def test_binary_bytes_are_refused() -> None:
    with pytest.raises(BinaryFile):
        decode_text(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)))


def test_an_encoding_none_reads_is_refused_not_guessed() -> None:
    # Latin-1's é followed by a space is neither UTF-8 nor GB18030.
    with pytest.raises(UnknownEncoding, match="UTF-8"):
        decode_text("Crème brûlée à la carte, café au lait".encode("latin-1"))


def test_a_broken_utf16_file_is_refused() -> None:
    with pytest.raises(UnknownEncoding):
        decode_text(codecs.BOM_UTF16_LE + "ok".encode("utf-16-le") + b"\x00\xd8")
