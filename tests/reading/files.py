"""Real files made by the tests: pictures with English and Chinese text drawn with a CJK font
(Debian's fonts-noto-cjk or fonts-wqy-zenhei, which `make test` installs), PDFs with a text
layer (written by hand: pages of Helvetica text), a scanned PDF (Pillow: pictures only), an
encrypted PDF, Word documents (python-docx), a zip bomb and GBK text."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader, PdfWriter

CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)


def cjk_font(size: int) -> ImageFont.FreeTypeFont:
    """A font with Chinese characters; a machine without one fails the test that needs it."""
    for path in CJK_FONTS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    raise AssertionError("no CJK font: install fonts-wqy-zenhei or fonts-noto-cjk (make test "
                         "does, as root)")


def text_image(lines: Sequence[str], *, size: tuple[int, int] = (1280, 720),
               font_size: int = 40, fmt: str = "PNG") -> bytes:
    """A screenshot-like picture: black lines of text on white."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = cjk_font(font_size)
    for index, line in enumerate(lines):
        draw.text((40, 40 + index * font_size * 2), line, font=font, fill="black")
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def blank_image(size: tuple[int, int] = (640, 480), fmt: str = "JPEG") -> bytes:
    """A picture with no text: a sky-blue gradient."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def text_pdf(pages: Sequence[str]) -> bytes:
    """A PDF whose pages hold these texts (ASCII, one line each per `\\n`) in Helvetica."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    font = 3 + 2 * len(pages)
    for index, text in enumerate(pages):
        lines = [line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
                 for line in text.split("\n")]
        stream = "BT /F1 11 Tf 14 TL 50 780 Td " + " ".join(f"({line}) '" for line in lines)
        stream += " ET"
        page_number, content_number = 3 + 2 * index, 4 + 2 * index
        kids.append(f"{page_number} 0 R")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents {content_number} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode())
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream".encode())
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
              .encode())
    return out.getvalue()


def scanned_pdf(pages: int = 2) -> bytes:
    """A PDF of pictures of pages (what a scanner makes): no text layer."""
    images = [Image.open(io.BytesIO(text_image([f"Scanned page {n + 1}"]))) for n in range(pages)]
    out = io.BytesIO()
    images[0].save(out, "PDF", save_all=True, append_images=images[1:])
    return out.getvalue()


def encrypted_pdf(text: str = "Top secret plans", password: str = "secret") -> bytes:
    """A PDF that opens only with a password."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf([text]))))
    writer.encrypt(user_password=password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def word_document(paragraphs: Sequence[str], table: Sequence[Sequence[str]] = ()) -> bytes:
    """A .docx with these paragraphs (and a table of these rows)."""
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row, values in zip(grid.rows, table, strict=True):
            for cell, value in zip(row.cells, values, strict=True):
                cell.text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb(unpacked: int = 64 << 20) -> bytes:
    """A small zip named like a .docx whose one entry unpacks to `unpacked` zero bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", bytes(unpacked))
    return out.getvalue()
