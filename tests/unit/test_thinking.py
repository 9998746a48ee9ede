"""The thinking splitter on every awkward stream a thinking model writes: tags cut across tokens
and UTF-8 pieces, a block the prompt opened, no closing tag, a second block, text before the
block; and how the bot knows a model thinks (its chat template, the `reasoning` setting)."""

from __future__ import annotations

import codecs
import random

import pytest

from bot.core.prompt import Segment, Turn
from bot.core.reasoning import ModelReasoning, opens_block, template_thinks
from bot.core.templates import AlpacaFormat, JinjaFormat
from bot.core.thinking import THINK_TAGS, Part, ThinkingSplitter, ThinkingTags


def split(pieces: list[str], *, opened: bool = False,
          tags: ThinkingTags = THINK_TAGS) -> tuple[str, str, list[Part]]:
    """Feed `pieces` one by one; (thinking, answer, every part released) at the end."""
    splitter = ThinkingSplitter(tags, opened=opened)
    parts: list[Part] = []
    for piece in pieces:
        parts += splitter.feed(piece)
    parts += splitter.finish()
    assert "".join(p.text for p in parts if p.thinking) == splitter.thought
    assert "".join(p.text for p in parts if not p.thinking) == splitter.answer
    return splitter.thought, splitter.answer, parts


def every_cut(text: str) -> list[list[str]]:
    """`text` cut in two at every place, and in single characters."""
    return [[text[:at], text[at:]] for at in range(len(text) + 1)] + [list(text)]


STREAM = "<think>Is 2+2 four? Yes.</think>\n\nIt is 4."


@pytest.mark.parametrize("pieces", every_cut(STREAM))
def test_tags_cut_anywhere_across_tokens(pieces: list[str]) -> None:
    thought, answer, parts = split(pieces)
    assert thought == "Is 2+2 four? Yes."
    assert answer == "\n\nIt is 4."
    assert not any("<" in part.text or ">" in part.text for part in parts)


def test_tags_cut_inside_utf8_characters() -> None:
    """Token bytes decoded incrementally (as the engines do) into the splitter: a Chinese
    character cut between tokens right beside a tag never leaks the tag or breaks."""
    data = "<think>想一想……</think>答案是四。".encode()
    for at in range(1, len(data)):
        decoder = codecs.getincrementaldecoder("utf-8")()
        splitter = ThinkingSplitter()
        for piece in (data[:at], data[at:]):
            splitter.feed(decoder.decode(piece))
        splitter.feed(decoder.decode(b"", final=True))
        splitter.finish()
        assert (splitter.thought, splitter.answer) == ("想一想……", "答案是四。"), at


def test_a_block_opened_by_the_prompt() -> None:
    thought, answer, _ = split(["Let me see", ", the user wants", "</think>", "Hello!"],
                               opened=True)
    assert thought == "Let me see, the user wants"
    assert answer == "Hello!"


def test_no_closing_tag_is_all_thinking() -> None:
    thought, answer, _ = split(["<think>", "hmm, and then", " more </thi"])
    assert thought == "hmm, and then more </thi"  # held back as a possible tag, then released
    assert answer == ""


def test_a_second_block_is_thinking_again() -> None:
    thought, answer, parts = split(["<think>first</think>One. ", "<think>second</think>Two."])
    assert thought == "firstsecond"
    assert answer == "One. Two."
    assert [p.thinking for p in parts] == [True, False, True, False]


def test_text_before_the_block_is_answer() -> None:
    thought, answer, parts = split(["Sure. ", "<think>plan</think>", " Done."])
    assert (thought, answer) == ("plan", "Sure.  Done.")
    assert parts[0] == Part("Sure. ", False)


def test_a_stray_closing_tag_and_a_nested_opening_tag_are_dropped() -> None:
    assert split(["reasoning without an opening", "</think>answer"])[:2] == (
        "", "reasoning without an openinganswer")
    assert split(["<think>a <think>b</think>c"])[:2] == ("a b", "c")


def test_text_that_only_looks_like_a_tag_is_released() -> None:
    thought, answer, _ = split(["x < y and <thin", "king> is not a tag"])
    assert (thought, answer) == ("", "x < y and <thinking> is not a tag")


def test_other_families_tags() -> None:
    tags = ThinkingTags("<seed:think>", "</seed:think>")
    assert split(["<seed:", "think>deep</seed:th", "ink>ok"], tags=tags)[:2] == ("deep", "ok")
    with pytest.raises(ValueError):
        ThinkingTags("<t>", "<t>")


def test_random_cuts_of_a_long_stream_give_the_same_split() -> None:
    text = "Hi <think>one\nline</think> a <b>bold</b> answer <think>two</think>end</think>"
    expected = split([text])[:2]
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert split(pieces)[:2] == expected


def test_tokens_are_counted_on_each_side_and_the_budget_read() -> None:
    splitter = ThinkingSplitter(opened=True)
    for piece in ["a", "b", "c"]:
        splitter.feed(piece)
    assert splitter.n_thinking == 3 and splitter.budget_spent(3) and not splitter.budget_spent(4)
    assert not splitter.budget_spent(-1)
    splitter.feed("</think>")
    splitter.feed("answer", tokens=2)
    assert (splitter.n_thinking, splitter.n_answer) == (4, 2)
    assert not splitter.budget_spent(0)  # out of the block: nothing to close


def test_end_block_closes_whatever_the_text_says() -> None:
    splitter = ThinkingSplitter(opened=True)
    splitter.feed("thinking </th")
    assert splitter.end_block() == [Part("</th", True)]
    assert splitter.feed("answer") == [Part("answer", False)]


def test_reasoning_content_from_a_server_is_thinking() -> None:
    splitter = ThinkingSplitter()
    assert splitter.thought_text("plan", tokens=3) == [Part("plan", True)]
    assert splitter.feed("Answer.") == [Part("Answer.", False)]
    assert (splitter.thought, splitter.answer, splitter.n_thinking) == ("plan", "Answer.", 3)


# -- knowing when a model thinks ------------------------------------------------------------

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
OPENS = CHATML[: -len("{% endif %}")] + "<think>\n{% endif %}"
QWEN3_LIKE = CHATML[: -len("{% endif %}")] + (
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% endif %}{% endif %}"
)


def test_a_template_that_opens_the_block_thinks_and_opens_every_reply() -> None:
    chat_format = JinjaFormat(OPENS)
    tags = ThinkingTags()
    assert template_thinks(chat_format, tags)
    prompt = chat_format.render(None, [Turn("user", "hi")])
    assert opens_block(prompt, tags)
    reasoning = ModelReasoning(chat_format)
    assert reasoning.thinks
    request = reasoning.request(prompt, mode="hide", budget=64)
    assert request.opened and request.budget == 64 and not request.quiet


def test_a_user_who_types_the_tag_opens_nothing() -> None:
    prompt = (Segment("<|im_start|>user\n", True), Segment("<think>", False))
    assert not opens_block(prompt, ThinkingTags())


def test_a_plain_template_does_not_think_unless_the_setting_says_so() -> None:
    chat_format = JinjaFormat(CHATML)
    prompt = chat_format.render(None, [Turn("user", "hi")])
    assert not ModelReasoning(chat_format).thinks
    assert not ModelReasoning(chat_format).request(prompt, mode="hide", budget=8).opened
    on = ModelReasoning(chat_format, setting="on")
    assert on.thinks and on.request(prompt, mode="show", budget=8).opened
    assert not on.request(prompt, mode="off", budget=8).opened
    assert not ModelReasoning(AlpacaFormat()).thinks


def test_off_asks_a_template_that_can_not_to_think() -> None:
    chat_format = JinjaFormat(QWEN3_LIKE)
    reasoning = ModelReasoning(chat_format)
    assert reasoning.thinks  # the template handles the tag
    turns = [Turn("user", "hi")]
    thinking = reasoning.format_for("hide").render(None, turns)
    quiet = reasoning.format_for("off").render(None, turns)
    assert "</think>" not in "".join(s.text for s in thinking)
    assert "".join(s.text for s in quiet).endswith("<think>\n\n</think>\n\n")
    assert not opens_block(quiet, reasoning.tags)
    assert reasoning.request(quiet, mode="off", budget=8).quiet
    everywhere = ModelReasoning(chat_format, setting="off")
    assert "".join(s.text for s in everywhere.chat_format.render(None, turns)).endswith(
        "</think>\n\n")


def test_the_window_leaves_room_for_the_thinking() -> None:
    reasoning = ModelReasoning(JinjaFormat(OPENS))
    assert reasoning.reserve(mode="hide", budget=512, room=1792) == 512
    assert reasoning.reserve(mode="show", budget=4096, room=1792) == 896  # half at most
    assert reasoning.reserve(mode="off", budget=512, room=1792) == 0
    assert reasoning.reserve(mode="hide", budget=-1, room=1792) == 0
    assert ModelReasoning(JinjaFormat(CHATML)).reserve(mode="hide", budget=512, room=1792) == 0
