"""A thinking model's thinking in a Telegram reply (what `ReplyStreamer` shows of it).

With /reasoning hide, while the model thinks and has not begun its answer, the reply's message
(or draft) is a short live status with the seconds so far; the answer replaces it. With
/reasoning show, the thinking is an expandable block quote above the answer (Telegram shows its
first lines and opens on a tap), split into messages like any reply: at most 4096 characters
each, cut at a paragraph, a line or a space.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.markup import (
    TELEGRAM_TEXT_LIMIT,
    RenderedMessage,
    Run,
    parse_markdown,
    render_html,
    render_plain,
    render_reply,
    split_runs,
)
from bot.i18n import N_, _

THINKING_STATUS = N_("💭 thinking… {seconds} s")
QUOTE = "quote"
"""The style of the thinking's runs: rendered as one expandable block quote per message."""


@dataclass(frozen=True)
class Thought:
    """What a reply shows of the model's thinking: its text (None: hidden, only that it
    thinks) and the whole seconds it has thought so far."""

    text: str | None
    seconds: int = 0


def render_with_thought(
    text: str, thought: Thought | None, *, final: bool, limit: int = TELEGRAM_TEXT_LIMIT
) -> list[RenderedMessage]:
    """The messages that show a reply's `text` (Markdown) with `thought`."""
    if thought is None:
        return render_reply(text, limit)
    if thought.text is None:
        if text.strip() or final:
            return render_reply(text, limit)
        return render_reply(f"_{_(THINKING_STATUS, seconds=thought.seconds)}_", limit)
    runs = [Run(thought.text.strip(), frozenset({QUOTE}))]
    if text.strip():
        runs += [Run("\n"), *parse_markdown(text)]
    return [RenderedMessage(_html(piece), render_plain(piece)) for piece in split_runs(runs, limit)]


def _html(runs: list[Run]) -> str:
    """Runs as Telegram HTML, each stretch of thinking one `<blockquote expandable>`."""
    parts: list[str] = []
    start = 0
    while start < len(runs):
        quoted = QUOTE in runs[start].styles
        end = start
        while end < len(runs) and (QUOTE in runs[end].styles) == quoted:
            end += 1
        stretch = [Run(run.text, run.styles - {QUOTE}, run.href, run.language)
                   for run in runs[start:end]]
        html = render_html(stretch)
        parts.append(f"<blockquote expandable>{html}</blockquote>" if quoted else html)
        start = end
    return "".join(parts)
