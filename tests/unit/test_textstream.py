"""ReplyText: token bytes to text that is safe to show, cut at stop strings."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import pytest

from bot.core.textstream import ReplyText

REPLACEMENT = "\ufffd"


def stream(pieces: Sequence[bytes], stop: Sequence[str] = ()) -> tuple[list[str], ReplyText]:
    """Feed every piece, then finish; returns every delta (the last one from finish)."""
    reply = ReplyText(stop)
    deltas = [reply.feed(piece) for piece in pieces]
    deltas.append(reply.finish())
    return deltas, reply


def splits(data: bytes, cuts: int) -> list[list[bytes]]:
    """Every way of cutting `data` at `cuts` distinct positions."""
    result = []
    for points in combinations(range(1, len(data)), cuts):
        bounds = [0, *points, len(data)]
        result.append([data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)])
    return result


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


MIXED = "Hi 中文 ok 😀! é"


def test_chinese_and_emoji_fed_byte_by_byte_are_shown_whole_and_at_once() -> None:
    data = MIXED.encode()
    reply = ReplyText()
    shown = ""
    for size in range(1, len(data) + 1):
        delta = reply.feed(data[size - 1 : size])
        assert REPLACEMENT not in delta
        shown += delta
        # Exactly the complete characters so far: nothing partial, nothing held needlessly.
        assert shown == data[:size].decode("utf-8", errors="ignore")
    assert reply.finish() == ""
    assert shown == reply.text == MIXED


@pytest.mark.parametrize("cuts", [1, 2, 3])
def test_every_split_of_multibyte_characters_decodes_cleanly(cuts: int) -> None:
    text = "中😀"
    for pieces in splits(text.encode(), cuts):
        deltas, reply = stream(pieces)
        assert all(REPLACEMENT not in delta for delta in deltas), pieces
        assert "".join(deltas) == reply.text == text
        assert all(delta in text for delta in deltas)


def test_an_unfinished_character_at_the_end_is_dropped_not_shown_broken() -> None:
    reply = ReplyText()
    assert reply.feed(b"ok \xe4\xb8") == "ok "
    assert reply.finish() == ""
    assert reply.text == "ok "


def test_invalid_bytes_inside_the_text_are_shown_as_replacement_characters() -> None:
    reply = ReplyText()
    assert reply.feed(b"a\xffb") == "a" + REPLACEMENT + "b"
    assert reply.feed(b"\xe4\xb8 c") == REPLACEMENT + " c"
    assert reply.finish() == ""
    assert reply.text == "a" + REPLACEMENT + "b" + REPLACEMENT + " c"


STOP = "### Instruction:"


def test_a_stop_string_split_across_pieces_is_never_shown() -> None:
    pieces = [b"Paris is the capital.\n\n##", b"# Inst", b"ruction:", b"\n\nWhat about", b"..."]
    deltas, reply = stream(pieces, [STOP])
    assert "".join(deltas) == reply.text == "Paris is the capital.\n\n"
    assert all("#" not in delta for delta in deltas)
    assert reply.stopped_by == STOP


@pytest.mark.parametrize("cuts", [1, 2])
def test_every_split_of_a_stop_inside_multibyte_text(cuts: int) -> None:
    stop = "<|im_end|>"
    answer = "答案😀"
    data = (answer + stop + "后来").encode()
    for pieces in splits(data, cuts):
        deltas, reply = stream(pieces, [stop])
        assert "".join(deltas) == reply.text == answer, pieces
        for delta in deltas:
            assert REPLACEMENT not in delta
            assert "<" not in delta and "|" not in delta
        assert reply.stopped_by == stop


def test_text_after_the_stop_is_dropped_and_feeding_goes_on_quietly() -> None:
    reply = ReplyText([STOP])
    assert reply.feed(b"Done.") == "Done."
    assert reply.feed(f" {STOP} and then".encode()) == " "
    assert reply.stopped_by == STOP
    assert reply.feed(b"more text") == ""
    assert reply.finish() == ""
    assert reply.text == "Done. "


def test_finish_flushes_text_held_back_for_a_stop_that_never_came() -> None:
    reply = ReplyText(["<|im_end|>"])
    assert reply.feed(b"x <") == "x "
    assert reply.feed(b"|im") == ""
    assert reply.finish() == "<|im"
    assert reply.stopped_by is None
    assert reply.text == "x <|im"
    assert reply.finish() == ""


def test_held_back_text_is_released_once_it_cannot_be_a_stop() -> None:
    reply = ReplyText(["<|im_end|>"])
    assert reply.feed(b"a <") == "a "
    assert reply.feed(b" b") == "< b"
    assert reply.feed(b"<|im_start|>") == "<|im_start|>"
    assert reply.stopped_by is None


def test_the_earliest_of_several_stops_wins() -> None:
    deltas, reply = stream(
        [b"answer ### Respon", b"se: ### Instruction: x"], [STOP, "### Response:"]
    )
    assert "".join(deltas) == reply.text == "answer "
    assert reply.stopped_by == "### Response:"


def test_a_stop_that_overlaps_a_held_prefix_of_another() -> None:
    # "ab" is held as a prefix of "abc"; "bd" then completes inside it.
    deltas, reply = stream([b"xab", b"d"], ["abc", "bd"])
    assert deltas == ["x", "a", ""]
    assert reply.text == "xa"
    assert reply.stopped_by == "bd"


def test_a_stop_at_the_very_start_gives_an_empty_reply() -> None:
    deltas, reply = stream([b"<|im_", b"end|>", b"Hello"], ["<|im_end|>"])
    assert deltas == ["", "", "", ""]
    assert reply.text == ""
    assert reply.stopped_by == "<|im_end|>"


def test_empty_stop_strings_are_ignored() -> None:
    deltas, reply = stream([b"abc"], ["", "zz"])
    assert deltas == ["abc", ""]
    assert reply.stopped_by is None


def test_no_stops_means_nothing_is_held_back() -> None:
    reply = ReplyText()
    assert reply.feed(b"###") == "###"
    assert reply.feed(b" Instruction:") == " Instruction:"
