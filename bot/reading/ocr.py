"""Text in images, read offline by RapidOCR: PaddleOCR's Chinese and English detection and
recognition models, which ship inside the `rapidocr-onnxruntime` package (nothing downloads).
Blocking: run it on a thread. Bounded in size (an image over `max_pixels` is scaled down
first, one over DECODE_PIXELS is refused before it is decoded) and in work (at most
MAX_BOXES lines of text are recognized), so a picture's cost has a ceiling."""

from __future__ import annotations

import io
import logging
import math
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from bot.i18n import _
from bot.reading.document import ReadingError

log = logging.getLogger(__name__)

DECODE_PIXELS = 100_000_000
"""Pixels an image may have at all: more is a decompression bomb, not a photo."""
MAX_BOXES = 400
"""Text boxes recognized at most (a dense page has about a hundred)."""
MIN_SCORE = 0.5
"""Recognized text less certain than this is left out."""


class NotAnImage(ReadingError):
    """Bytes Pillow cannot open as a picture."""


@dataclass(frozen=True)
class ImageText:
    """What was read in an image: its lines in reading order (empty: no readable text), the
    size it was read at, and the seconds it took."""

    lines: list[str]
    width: int
    height: int
    seconds: float

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class ImageReader:
    """The OCR model, loaded at the first image and reused; one image at a time (the model
    is not shared between threads, and two would only halve each other's speed)."""

    def __init__(self, *, max_pixels: int, threads: int | None = None) -> None:
        self.max_pixels = max_pixels
        self._threads = threads
        self._engine: Any = None
        self._lock = threading.Lock()

    def read(self, data: bytes) -> ImageText:
        """The text in the image `data` (JPEG, PNG, WebP, ...); NotAnImage if it is none."""
        with self._lock:
            started = time.monotonic()
            image = self._open(data)
            engine = self._load()
            result, _elapsed = engine(image)
            lines = _reading_order(result or [])
            return ImageText(lines, image.width, image.height, time.monotonic() - started)

    def _open(self, data: bytes) -> Image.Image:
        """The image decoded in RGB, scaled down to at most `max_pixels`."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image: Image.Image = Image.open(io.BytesIO(data))
                if image.width * image.height > DECODE_PIXELS:
                    raise NotAnImage(_("This picture is far too large ({width}×{height}); "
                                       "send a smaller one.", width=image.width,
                                       height=image.height))
                scale = math.sqrt(self.max_pixels / max(image.width * image.height, 1))
                if scale < 1:
                    # A JPEG decodes straight at a fraction of its size: much less work.
                    image.draft("RGB", (int(image.width * scale), int(image.height * scale)))
                image = image.convert("RGB")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError,
                Image.DecompressionBombWarning, ValueError) as exc:
            log.info("unreadable image: %s", exc)
            raise NotAnImage(_("I could not open this picture (it is damaged, or in a format "
                               "I do not read).")) from None
        if image.width * image.height > self.max_pixels:
            scale = math.sqrt(self.max_pixels / (image.width * image.height))
            size = (max(int(image.width * scale), 1), max(int(image.height * scale), 1))
            image = image.resize(size, Image.Resampling.LANCZOS)
        return image

    def _load(self) -> Any:
        if self._engine is None:
            from rapidocr_onnxruntime import RapidOCR  # a second to load: only when needed

            options: dict[str, Any] = {"det_max_candidates": MAX_BOXES}
            if self._threads:
                options["intra_op_num_threads"] = self._threads
            self._engine = RapidOCR(**options)
        return self._engine


def _reading_order(result: list[Any]) -> list[str]:
    """The recognized boxes as lines: boxes whose middles are at one height join into a line
    (left to right), lines top to bottom. RapidOCR gives [corners, text, score] per box."""
    boxes = []
    for corners, text, score in result:
        if float(score) < MIN_SCORE or not str(text).strip():
            continue
        ys = [point[1] for point in corners]
        xs = [point[0] for point in corners]
        boxes.append(((min(ys) + max(ys)) / 2, max(max(ys) - min(ys), 1), min(xs), str(text)))
    boxes.sort()
    lines: list[list[tuple[float, str]]] = []
    last_middle, last_height = -1e9, 0.0
    for middle, height, left, text in boxes:
        if lines and abs(middle - last_middle) < 0.5 * min(height, last_height):
            lines[-1].append((left, text))
        else:
            lines.append([(left, text)])
            last_middle, last_height = middle, height
    return [_join(sorted(line)) for line in lines]


def _join(pieces: list[tuple[float, str]]) -> str:
    """A line's boxes joined: with a space between words, without one beside Chinese."""
    text = ""
    for _left, piece in pieces:
        cjk_edge = bool(text) and ("\u3000" <= text[-1] <= "\u9fff" or "\u3000" <= piece[0]
                                   <= "\u9fff")
        text += piece if not text or cjk_edge else " " + piece
    return text
