"""What one message of a chat's outbox says when answers piled up: each text once, the newest
that fit one Telegram message, oldest first, and a line counting what was left out."""

from __future__ import annotations

from telegram.constants import MessageLimit

from bot.telegram.outbox import Answer, Batch


def batch(*texts: str, left_out: int = 0) -> Batch:
    return Batch(tuple(Answer(t, reply_to=n) for n, t in enumerate(texts, 1)), left_out)


def test_a_lone_answer_goes_as_it_is() -> None:
    assert batch("Temperature set to 0.5.").text() == "Temperature set to 0.5."
    assert batch("x").reply_to == 1


def test_repeated_answers_are_sent_once_at_their_newest_place() -> None:
    merged = batch("help", "settings", "help", "help").text()
    assert merged == "settings\n\nhelp"
    assert batch("a", "b", "c").reply_to == 3  # the newest command is quoted


def test_what_does_not_fit_one_message_is_counted_not_sent() -> None:
    long = [f"{n}:" + "x" * 1500 for n in range(6)]
    merged = batch(*long, left_out=4).text()
    assert len(merged) <= MessageLimit.MAX_TEXT_LENGTH
    assert merged.startswith("(8 earlier answers left out: too many commands at once.)")
    assert merged.index("4:") < merged.index("5:") and "3:" not in merged
    assert batch("only", left_out=1).text() == (
        "(1 earlier answer left out: too many commands at once.)\n\nonly"
    )
