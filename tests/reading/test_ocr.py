"""Text in images read by the real OCR model (PaddleOCR's, shipped in rapidocr-onnxruntime),
on pictures drawn with a CJK font: English and Chinese, scaled down past `max_pixels`, none
found in a picture without text, and what is not a picture refused."""

from __future__ import annotations

import pytest

from bot.reading.ocr import ImageReader, NotAnImage
from tests.reading.files import blank_image, text_image


@pytest.fixture(scope="module")
def reader() -> ImageReader:
    return ImageReader(max_pixels=2_000_000)


def test_english_and_chinese_lines_in_reading_order(reader: ImageReader) -> None:
    found = reader.read(text_image(["Connection refused on port 5432", "数据库连接失败，请检查配置"]))
    assert len(found.lines) == 2
    assert "refused" in found.lines[0] and "5432" in found.lines[0]
    assert "数据库连接失败" in found.lines[1]


def test_a_large_picture_is_read_scaled_down(reader: ImageReader) -> None:
    small = ImageReader(max_pixels=500_000)
    found = small.read(text_image(["INVOICE TOTAL 4200"], size=(2400, 1600), font_size=80,
                                  fmt="JPEG"))
    assert found.width * found.height <= 500_000
    assert "4200" in found.text


def test_a_picture_without_text_reads_nothing(reader: ImageReader) -> None:
    assert reader.read(blank_image()).lines == []


def test_bytes_that_are_no_picture_are_refused(reader: ImageReader) -> None:
    with pytest.raises(NotAnImage):
        reader.read(b"GIF89a but not really")
