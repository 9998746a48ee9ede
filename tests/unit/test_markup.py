"""Model Markdown to Telegram messages: parsing, splitting at 4096 UTF-16 units, HTML."""

from __future__ import annotations

import html
import random
import re
from html.parser import HTMLParser

import pytest

from bot.core.markup import (
    TELEGRAM_TEXT_LIMIT,
    RenderedMessage,
    Run,
    escape_html,
    parse_markdown,
    render_reply,
    split_points,
    utf16_len,
)

LIMIT = TELEGRAM_TEXT_LIMIT
EMOJI = "\U0001f600"  # 😀, outside the BMP: two UTF-16 code units
ALLOWED = {"b", "i", "s", "code", "pre", "a"}


class TelegramHTML(HTMLParser):
    """Checks one message's HTML the way Telegram's parser would see it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.pre_text: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in ALLOWED, tag
        parent = self.stack[-1] if self.stack else None
        if parent == "pre":
            # The one nesting Telegram allows inside pre: the language of a code block.
            assert tag == "code", self.stack
            assert [name for name, _ in attrs] == ["class"]
        else:
            # code and pre contain no other entity (Telegram drops or refuses them).
            assert parent != "code", f"<{tag}> inside <code>"
            assert tag != "pre" or not self.stack, f"<pre> inside {self.stack}"
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"] or "")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if "pre" in self.stack:
            self.pre_text.append(data)


def check(message: RenderedMessage) -> TelegramHTML:
    """Assert the message is valid Telegram HTML whose visible text is its plain text."""
    parser = TelegramHTML()
    parser.feed(message.html)
    parser.close()
    assert parser.stack == [], "unclosed tags"
    assert "".join(parser.text) == message.plain
    # Every & starts one of the entities Telegram knows, every < starts a tag.
    assert not re.search(r"&(?!(?:amp|lt|gt|quot);)", message.html)
    assert re.sub(r"</?(?:b|i|s|code|pre|a)(?: [^<>]*)?>", "", message.html).count("<") == 0
    assert message.plain.strip() == message.plain != ""
    assert utf16_len(message.plain) <= LIMIT
    return parser


def reply(text: str) -> list[RenderedMessage]:
    messages = render_reply(text)
    for message in messages:
        check(message)
    return messages


def one(text: str) -> RenderedMessage:
    messages = reply(text)
    assert len(messages) == 1, messages
    return messages[0]


# -- styles ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("**bold** and __bold__", "<b>bold</b> and <b>bold</b>"),
        ("*italic* and _italic_", "<i>italic</i> and <i>italic</i>"),
        ("~~gone~~", "<s>gone</s>"),
        ("`x = 1`", "<code>x = 1</code>"),
        ("`**not bold**`", "<code>**not bold**</code>"),
        ("**bold _and italic_**", "<b>bold </b><i><b>and italic</b></i>"),
        ("# Title\nbody", "<b>Title</b>\nbody"),
        ("### Steps ###\n1. one", "<b>Steps</b>\n1. one"),
        ("snake_case_name and 2*3*4", "snake_case_name and 2*3*4"),
        ("1 < 2 && 3 > 2", "1 &lt; 2 &amp;&amp; 3 &gt; 2"),
        ("&amp; stays literal", "&amp;amp; stays literal"),
        ("<b>not a tag</b>", "&lt;b&gt;not a tag&lt;/b&gt;"),
    ],
)
def test_inline_styles(text: str, expected: str) -> None:
    assert one(text).html == expected


def test_code_inside_bold_is_never_a_code_entity_holding_bold() -> None:
    message = one("**run `make test` now**")
    assert message.html == "<b>run </b><b><code>make test</code></b><b> now</b>"
    assert message.plain == "run make test now"


@pytest.mark.parametrize(
    "text",
    ["**bold", "some **bold text still streaming", "*", "**", "__half", "~~half", "`half",
     "```python\nprint(1)", "[label](https://example.org"],
)
def test_unclosed_markers_stay_literal(text: str) -> None:
    message = one(text)
    assert message.plain == text
    assert message.html == escape_html(text)


def test_a_closed_span_next_to_an_unclosed_marker() -> None:
    assert one("**done** and **pending").html == "<b>done</b> and **pending"


def test_fenced_code_keeps_its_language_and_escapes_its_text() -> None:
    message = one("Try:\n```python\nif a < b & c:\n    print(\"**x**\")\n```\nDone.")
    assert message.html == (
        'Try:\n<pre><code class="language-python">if a &lt; b &amp; c:\n'
        '    print("**x**")</code></pre>\nDone.'
    )
    assert message.plain == 'Try:\nif a < b & c:\n    print("**x**")\nDone.'


def test_a_fence_without_a_language() -> None:
    assert one("```\nls -la\n```").html == "<pre>ls -la</pre>"


# -- links -------------------------------------------------------------------------------------


def test_http_and_https_links_become_anchors_with_escaped_urls() -> None:
    message = one('[docs](https://example.org/a?x=1&y="2") and [old](http://example.org)')
    assert message.html == (
        '<a href="https://example.org/a?x=1&amp;y=&quot;2&quot;">docs</a> and '
        '<a href="http://example.org">old</a>'
    )
    assert message.plain == "docs and old"


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "tg://user?id=1", "ftp://example.org/x", "file:///etc/passwd",
     "//example.org", "example.org"],
)
def test_other_link_schemes_stay_literal_text(url: str) -> None:
    text = f"[click]({url})"
    message = one(text)
    assert "<a" not in message.html
    assert message.plain == text


# -- splitting ----------------------------------------------------------------------------------


def test_utf16_length_counts_emoji_twice() -> None:
    assert utf16_len("abc") == 3
    assert utf16_len(EMOJI) == 2
    assert utf16_len("中" + EMOJI) == 3


def test_exactly_the_limit_is_one_message() -> None:
    text = "a" * LIMIT
    assert [m.plain for m in reply(text)] == [text]


def test_one_more_unit_splits_into_two() -> None:
    messages = reply("a" * (LIMIT + 1))
    assert [m.plain for m in messages] == ["a" * LIMIT, "a"]


def test_an_emoji_that_would_cross_the_limit_moves_to_the_next_message() -> None:
    assert [m.plain for m in reply("a" * (LIMIT - 2) + EMOJI)] == ["a" * (LIMIT - 2) + EMOJI]
    messages = reply("a" * (LIMIT - 1) + EMOJI)
    assert [m.plain for m in messages] == ["a" * (LIMIT - 1), EMOJI]


def test_emoji_are_counted_as_two_units_and_never_cut() -> None:
    text = "a" * 2047 + EMOJI * 1025
    assert utf16_len(text) == LIMIT + 1
    messages = reply(text)
    assert [m.plain for m in messages] == ["a" * 2047 + EMOJI * 1024, EMOJI]
    assert utf16_len(messages[0].plain) == LIMIT - 1
    for message in messages:
        message.plain.encode("utf-16-le")  # no lone surrogate anywhere


def test_split_points_never_exceed_the_limit_with_mixed_widths() -> None:
    text = ("中" + EMOJI + "x ") * 3000
    start = 0
    for cut in [*split_points(text), len(text)]:
        assert 0 < utf16_len(text[start:cut]) <= LIMIT
        start = cut


def test_a_paragraph_break_is_preferred() -> None:
    text = "a" * 3500 + "\n\n" + "b" * 300 + "\n" + "c" * 200 + " " + "d" * 200
    assert [m.plain for m in reply(text)] == [
        "a" * 3500, "b" * 300 + "\n" + "c" * 200 + " " + "d" * 200,
    ]


def test_then_a_line_break() -> None:
    text = "a" * 3500 + "\n" + "b" * 300 + " " + "c" * 400
    assert [m.plain for m in reply(text)] == ["a" * 3500, "b" * 300 + " " + "c" * 400]


def test_then_a_space() -> None:
    words = " ".join(f"word{i:04d}" for i in range(600))  # 8 + 1 characters per word
    messages = reply(words)
    assert len(messages) == 2
    assert messages[0].plain == words[: 455 * 9 - 1]
    assert messages[0].plain.endswith("word0454")
    assert messages[1].plain.startswith("word0455")


def test_a_break_early_in_the_message_is_not_worth_a_short_message() -> None:
    text = "a" * 1000 + "\n\n" + "b" * 4000
    messages = reply(text)
    assert [m.plain for m in messages] == ["a" * 1000 + "\n\n" + "b" * 3094, "b" * 906]


def test_the_split_text_is_the_whole_text() -> None:
    text = "\n\n".join(f"Paragraph {i}. " + "Some words here. " * (i % 40) for i in range(300))
    messages = reply(text)
    assert len(messages) > 3
    rebuilt = "".join(m.plain for m in messages)
    assert re.sub(r"\s+", "", rebuilt) == re.sub(r"\s+", "", text)
    position = 0
    for message in messages:
        position = text.index(message.plain, position) + len(message.plain)


@pytest.mark.parametrize("offset", range(LIMIT - 6, LIMIT + 1))
def test_html_entities_near_the_boundary_are_never_cut(offset: int) -> None:
    text = "x" * offset + "&<>" * 10 + "<b>&amp;</b>"
    messages = reply(text)
    assert "".join(m.plain for m in messages) == text
    for message in messages:
        assert html.unescape(re.sub(r"<[^>]*>", "", message.html)) == message.plain


def test_markup_characters_count_once_however_long_their_escapes() -> None:
    text = "&<>" * (LIMIT // 3) + "&"  # 4096 visible characters, far more HTML
    message = one(text)
    assert len(message.html) > 4 * LIMIT
    assert message.plain == text


def test_a_code_block_split_in_two_is_pre_in_both_messages() -> None:
    lines = [f"print({i})  # step {i}" for i in range(400)]
    text = "Here is the code:\n```python\n" + "\n".join(lines) + "\n```\nThat's all."
    messages = reply(text)
    assert len(messages) == 3
    inside = "\n".join("".join(check(m).pre_text) for m in messages)
    assert inside == "\n".join(lines)
    opening = '<pre><code class="language-python">'
    assert messages[0].html.startswith("Here is the code:\n" + opening)
    assert messages[0].html.endswith("</code></pre>")
    assert messages[1].html.startswith(opening)
    assert messages[1].html.endswith("</code></pre>")
    assert messages[2].html.startswith(opening)
    assert messages[2].html.endswith("</code></pre>\nThat's all.")


def test_styles_continue_across_a_split() -> None:
    text = "**" + "bold " * 1000 + "end**"
    messages = reply(text)
    assert len(messages) == 2
    for message in messages:
        assert message.html.startswith("<b>") and message.html.endswith("</b>")
        assert message.html.count("<b>") == 1


def test_a_link_label_split_in_two_keeps_its_url_on_both_sides() -> None:
    text = "x" * 4090 + "[a long label](https://example.org/)"
    messages = reply(text)
    assert len(messages) == 2
    assert check(messages[0]).hrefs == ["https://example.org/"]
    assert check(messages[1]).hrefs == ["https://example.org/"]


@pytest.mark.parametrize("text", ["", " ", "\n\n", " \t\n ", "```\n```", "``` \n \n```"])
def test_empty_or_blank_text_gives_no_messages(text: str) -> None:
    assert render_reply(text) == []


def test_messages_are_trimmed_as_telegram_would() -> None:
    assert [m.plain for m in reply("\n\n  hello  \n")] == ["hello"]


def test_blank_code_lines_at_a_split_do_not_leave_untrimmed_text() -> None:
    # The first message ends with text, then the blank first lines of a code block.
    text = "a" * (LIMIT - 4) + "\n```\n\n\n\nprint(1)\n```"
    assert [(m.html, m.plain) for m in reply(text)] == [
        ("a" * (LIMIT - 4), "a" * (LIMIT - 4)),
        ("<pre>print(1)</pre>", "print(1)"),
    ]
    # ... and the other way round: a message opens with the blank last lines of a block.
    short = render_reply("```\nxy\n\n\n\n```\ntail end", limit=4)
    assert [(m.html, m.plain) for m in short] == [
        ("<pre>xy</pre>", "xy"), ("ta", "ta"), ("il e", "il e"), ("nd", "nd"),
    ]


@pytest.mark.parametrize("seed", range(4))
def test_random_markdown_always_gives_valid_messages(seed: int) -> None:
    pieces = ["*", "**", "_", "~~", "`", "```", "```py\n", "[", "](", ")", "https://x.org/",
              "\n", "\n\n", " ", "a", "word", "## ", "&", "<", ">", "&amp;", "中", EMOJI, '"']
    rng = random.Random(seed)
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 60)))
        limit = rng.choice([2, 3, 7, 25])
        messages = render_reply(text, limit)
        for message in messages:
            check(message)
            assert utf16_len(message.plain) <= limit
        visible = "".join(run.text for run in parse_markdown(text))
        shown = "".join(message.plain for message in messages)
        assert re.sub(r"\s", "", shown) == re.sub(r"\s", "", visible), text


def test_parse_markdown_merges_neighbouring_runs_of_one_style() -> None:
    assert parse_markdown("a *b* c") == [
        Run("a "), Run("b", frozenset({"i"})), Run(" c"),
    ]
    assert parse_markdown("**a****b**") == [Run("ab", frozenset({"b"}))]
