"""Documents' text from real files the tests make: text in UTF-8, UTF-16 and GBK, PDF with a
text layer, Word .docx; and each bad input refused with one line."""

from __future__ import annotations

import pytest

from bot.reading.decoding import BinaryFile, UnknownEncoding
from bot.reading.document import ReadingError
from bot.reading.extraction import extract, is_image, kind_of
from bot.reading.pdf import EncryptedPdf, ScannedPdf
from bot.reading.word import NotADocx, ZipBomb
from tests.reading.files import (
    encrypted_pdf,
    scanned_pdf,
    text_image,
    text_pdf,
    word_document,
    zip_bomb,
)


def test_kinds_by_name_and_type() -> None:
    assert kind_of("Report.PDF", None) == "pdf"
    assert kind_of(None, "application/pdf") == "pdf"
    assert kind_of("plan.docx", "application/octet-stream") == "docx"
    assert kind_of("main.py", "text/x-python") == kind_of("data.csv", None) == "text"
    assert is_image("shot.png", None) and is_image(None, "image/jpeg")
    assert not is_image("notes.txt", "text/plain")
    with pytest.raises(ReadingError, match=".xlsx"):
        kind_of("sheet.xlsx", None)


def test_gbk_text_file() -> None:
    text = "会议纪要\n预算：四千二百元\n负责人：王伟"
    document = extract("纪要.txt", "text/plain", text.encode("gbk"), max_chars=1000)
    assert document.sections[0].text == text and document.unit == "line"
    assert document.words == 16 and not document.truncated


def test_pdf_pages_are_read_with_their_numbers() -> None:
    document = extract("r.pdf", None, text_pdf(["Intro page", "Budget: 4200 euros\nOwner: Bob"]),
                       max_chars=10_000)
    assert document.kind == "pdf" and document.pages == 2
    assert [(s.page, s.text) for s in document.sections] == [
        (1, "Intro page"), (2, "Budget: 4200 euros\nOwner: Bob")]


def test_docx_paragraphs_and_tables() -> None:
    data = word_document(["Project plan", "羊驼项目计划"], [["Task", "Owner"], ["Shear", "Ann"]])
    document = extract("plan.docx", None, data, max_chars=10_000)
    assert document.sections[0].text == "Project plan\n羊驼项目计划\nTask | Owner\nShear | Ann"
    assert document.unit == "paragraph"


def test_more_text_than_the_limit_is_kept_up_to_it() -> None:
    document = extract("big.txt", None, ("x" * 100 + "\n").encode() * 50, max_chars=1000)
    assert document.truncated and document.chars == 1000
    pdf = extract("big.pdf", None, text_pdf([f"page {n} " + "y" * 300 for n in range(10)]),
                  max_chars=1000)
    assert pdf.truncated and pdf.chars == 1000 and pdf.pages == 10


@pytest.mark.parametrize(("name", "data", "error", "says"), [
    ("scan.pdf", scanned_pdf(), ScannedPdf, "no text layer"),
    ("locked.pdf", encrypted_pdf(), EncryptedPdf, "password"),
    ("broken.pdf", b"%PDF-1.4\nnot really", ReadingError, "damaged"),
    ("bomb.docx", zip_bomb(), ZipBomb, "zip bomb"),
    ("fake.docx", b"this is no zip at all", NotADocx, "not even a zip"),
    ("photo.txt", text_image(["hello"]), BinaryFile, "not text"),
    ("french.txt", "Crème brûlée, café au lait".encode("latin-1"), UnknownEncoding, "encoding"),
    ("empty.txt", b"  \n ", ReadingError, "empty"),
])
def test_bad_input_is_one_clear_line(name: str, data: bytes, error: type[Exception],
                                     says: str) -> None:
    with pytest.raises(error, match=says) as raised:
        extract(name, None, data, max_chars=10_000)
    assert "\n" not in str(raised.value)


def test_a_pdf_encrypted_without_a_user_password_opens() -> None:
    from io import BytesIO

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(BytesIO(text_pdf(["Open to read"]))))
    writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    out = BytesIO()
    writer.write(out)
    assert extract("x.pdf", None, out.getvalue(), max_chars=100).sections[0].text == (
        "Open to read")
