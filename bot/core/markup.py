"""Model output (Markdown-ish text) to Telegram messages: styled runs, split, rendered as HTML.

The text is parsed into runs of one style, split into messages of at most 4096 UTF-16 code
units of visible text, and each message is rendered on its own. So every message is balanced
HTML, an entity such as `&amp;` is never cut in half, and a half-streamed `**bold` stays plain
text until its closing marker arrives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TELEGRAM_TEXT_LIMIT = 4096


@dataclass(frozen=True)
class Run:
    """Visible text with one set of styles (b, i, s, code, pre) and an optional link."""

    text: str
    styles: frozenset[str] = field(default_factory=frozenset)
    href: str | None = None
    language: str | None = None


_FENCE = re.compile(r"```([\w+#.-]*)[ \t]*\n(.*?)(?:\n)?```", re.S)
_INLINE = re.compile(
    r"`(?P<code>[^`\n]+)`"
    r"|\*\*(?P<bold>(?=\S)(?:[^*\n]|\*(?!\*))+?(?<=\S))\*\*"
    r"|__(?P<bold2>(?=\S)[^_\n]+?(?<=\S))__"
    r"|~~(?P<strike>(?=\S)[^~\n]+?(?<=\S))~~"
    r"|(?<![\w*])\*(?P<italic>(?=[^\s*])[^*\n]*?(?<=[^\s*]))\*(?![\w*])"
    r"|(?<!\w)_(?P<italic2>(?=[^\s_])[^_\n]*?(?<=[^\s_]))_(?!\w)"
    r"|\[(?P<label>[^\]\n]+)\]\((?P<url>https?://[^\s)]+)\)"
)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*$", re.M)


def parse_markdown(text: str) -> list[Run]:
    """Parse the Markdown subset models write: fences, `code`, **bold**, *italic*, ~~s~~, links."""
    runs: list[Run] = []
    position = 0
    for fence in _FENCE.finditer(text):
        runs.extend(_parse_inline(text[position : fence.start()]))
        runs.append(Run(fence.group(2), frozenset({"pre"}), language=fence.group(1) or None))
        position = fence.end()
    runs.extend(_parse_inline(text[position:]))
    return _merge(runs)


def _parse_inline(text: str, styles: frozenset[str] = frozenset()) -> list[Run]:
    runs: list[Run] = []
    # Headings become bold lines.
    position = 0
    for heading in _HEADING.finditer(text):
        runs.extend(_parse_spans(text[position : heading.start()], styles))
        runs.extend(_parse_spans(heading.group(2), styles | {"b"}))
        position = heading.end()
    runs.extend(_parse_spans(text[position:], styles))
    return runs


def _parse_spans(text: str, styles: frozenset[str]) -> list[Run]:
    runs: list[Run] = []
    position = 0
    for match in _INLINE.finditer(text):
        if match.start() > position:
            runs.append(Run(text[position : match.start()], styles))
        kind = match.lastgroup
        if kind == "code":
            runs.append(Run(match.group("code"), styles | {"code"}))
        elif kind in ("bold", "bold2"):
            runs.extend(_parse_spans(match.group(kind), styles | {"b"}))
        elif kind in ("italic", "italic2"):
            runs.extend(_parse_spans(match.group(kind), styles | {"i"}))
        elif kind == "strike":
            runs.extend(_parse_spans(match.group("strike"), styles | {"s"}))
        else:  # a link
            runs.append(Run(match.group("label"), styles, href=match.group("url")))
        position = match.end()
    if position < len(text):
        runs.append(Run(text[position:], styles))
    return runs


def _merge(runs: list[Run]) -> list[Run]:
    merged: list[Run] = []
    for run in runs:
        if not run.text:
            continue
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and previous.styles == run.styles
            and previous.href == run.href
            and previous.language == run.language
        ):
            merged[-1] = Run(previous.text + run.text, run.styles, run.href, run.language)
        else:
            merged.append(run)
    return merged


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def split_points(text: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[int]:
    """Indices at which to cut `text` so every piece has at most `limit` UTF-16 units.

    Cuts prefer a paragraph break, then a line break, then a space, in the last quarter of the
    piece; otherwise the piece is cut at the limit. Python indexes code points, so a surrogate
    pair (an emoji) is never cut in two.
    """
    cuts: list[int] = []
    start = 0
    while utf16_len(text[start:]) > limit:
        end = start
        units = 0
        while end < len(text):
            width = 2 if ord(text[end]) > 0xFFFF else 1
            if units + width > limit:
                break
            units += width
            end += 1
        floor = start + (end - start) * 3 // 4
        cut = end
        for separator in ("\n\n", "\n", " "):
            found = text.rfind(separator, floor, end)
            if found > start:
                cut = found + len(separator)
                break
        cuts.append(cut)
        start = cut
    return cuts


def split_runs(runs: list[Run], limit: int = TELEGRAM_TEXT_LIMIT) -> list[list[Run]]:
    """Split styled runs into messages of at most `limit` units of visible text each."""
    text = "".join(run.text for run in runs)
    bounds = [0, *split_points(text, limit), len(text)]
    messages: list[list[Run]] = []
    for begin, end in zip(bounds, bounds[1:], strict=False):
        piece: list[Run] = []
        offset = 0
        for run in runs:
            run_begin, run_end = offset, offset + len(run.text)
            offset = run_end
            low, high = max(begin, run_begin), min(end, run_end)
            if low < high:
                piece.append(
                    Run(run.text[low - run_begin : high - run_begin], run.styles, run.href,
                        run.language)
                )
        messages.append(_strip_edges(piece))
    return [piece for piece in messages if piece]


def _strip_edges(runs: list[Run]) -> list[Run]:
    """Telegram trims messages; trim here so a message never turns out empty or unchanged."""
    # Blank runs at the edges go whatever their style (a blank code line too): otherwise the
    # run next to them keeps whitespace that Telegram trims.
    result = list(runs)
    while result and not result[0].text.strip():
        result.pop(0)
    while result and not result[-1].text.strip():
        result.pop()
    if not result:
        return []
    first, last = result[0], result[-1]
    result[0] = Run(first.text.lstrip(), first.styles, first.href, first.language)
    last = result[-1]
    result[-1] = Run(last.text.rstrip(), last.styles, last.href, last.language)
    return [run for run in result if run.text]


def escape_html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Innermost first. Telegram's code entity may sit inside bold/italic/strike but may not contain
# them, so `code` must be the innermost tag.
_TAGS = (("code", "code"), ("b", "b"), ("i", "i"), ("s", "s"))


def render_html(runs: list[Run]) -> str:
    """Render runs as Telegram HTML; each run opens and closes its own tags, so it is balanced."""
    parts: list[str] = []
    for run in runs:
        body = escape_html(run.text)
        if "pre" in run.styles:
            if run.language:
                language = escape_html(run.language).replace('"', "&quot;")
                body = f'<pre><code class="language-{language}">{body}</code></pre>'
            else:
                body = f"<pre>{body}</pre>"
            parts.append(body)
            continue
        for style, tag in _TAGS:
            if style in run.styles:
                body = f"<{tag}>{body}</{tag}>"
        if run.href:
            href = escape_html(run.href).replace('"', "&quot;")
            body = f'<a href="{href}">{body}</a>'
        parts.append(body)
    return "".join(parts)


def render_plain(runs: list[Run]) -> str:
    return "".join(run.text for run in runs)


@dataclass(frozen=True)
class RenderedMessage:
    """One Telegram message of a reply: HTML and the plain text to fall back on."""

    html: str
    plain: str


def render_reply(text: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[RenderedMessage]:
    """A reply's text as the list of Telegram messages that show it."""
    return [
        RenderedMessage(render_html(piece), render_plain(piece))
        for piece in split_runs(parse_markdown(text), limit)
    ]
