"""The access rules and the fair-use limits, as plain decisions (no I/O, the time passed in)."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.access.fair_use import FairUse, Limits, seconds_to_midnight
from bot.access.policy import HOLD_OFF, HoldOff, Rules


def test_who_is_allowed_in_each_mode() -> None:
    pairing = Rules(mode="pairing", admins=frozenset({1}), always=frozenset({2, -100}))
    assert pairing.allows(1, None) and pairing.allows(2, None) and pairing.allows(-100, None)
    assert pairing.allows(3, "allowed") and not pairing.allows(3, None)
    assert not pairing.allows(3, "denied")
    assert pairing.allows(2, "denied")  # the configuration wins over a stored decision
    assert Rules(mode="open").allows(3, "denied")
    assert not Rules(mode="allowlist").allows(3, None)
    assert pairing.is_admin(1) and not pairing.is_admin(2) and not pairing.is_admin(None)


def test_a_stranger_is_answered_once_an_hour_and_asked_about_once() -> None:
    pairing = Rules(mode="pairing")
    first = pairing.on_stranger(decision=None, pending=False, last_answer=None, now=0.0)
    assert first.answer and first.request
    again = pairing.on_stranger(decision=None, pending=True, last_answer=0.0, now=60.0)
    assert not again.answer and not again.request
    later = pairing.on_stranger(decision=None, pending=True, last_answer=0.0, now=HOLD_OFF)
    assert later.answer and not later.request
    denied = pairing.on_stranger(decision="denied", pending=False, last_answer=None, now=0.0)
    assert denied.answer and not denied.request
    allowlist = Rules(mode="allowlist")
    quiet = allowlist.on_stranger(decision=None, pending=False, last_answer=None, now=0.0)
    assert quiet.answer and not quiet.request
    assert not allowlist.on_stranger(decision=None, pending=False, last_answer=0.0,
                                     now=HOLD_OFF - 1).answer


def test_a_group_added_by_someone_allowed_is_allowed_else_asked_about_or_left() -> None:
    rules = Rules(mode="pairing", admins=frozenset({1}), always=frozenset({2}))
    assert rules.on_added(by=1, by_decision=None) == "allow"
    assert rules.on_added(by=2, by_decision=None) == "allow"
    assert rules.on_added(by=3, by_decision="allowed") == "allow"
    assert rules.on_added(by=3, by_decision=None) == "ask"
    assert rules.on_added(by=None, by_decision=None) == "ask"
    assert Rules(mode="allowlist").on_added(by=3, by_decision=None) == "leave"
    assert Rules(mode="open").on_added(by=3, by_decision=None) == "serve"


def test_hold_off_remembers_the_last_answer() -> None:
    hold = HoldOff()
    assert hold.last(5) is None
    hold.mark(5, 10.0)
    assert hold.last(5) == 10.0


def test_the_rate_limit_admits_n_a_minute_and_tells_once() -> None:
    fair = FairUse(Limits(per_minute=2))
    assert fair.judge(user=1, chat=1, now=0.0) is None
    assert fair.judge(user=1, chat=1, now=10.0) is None
    refused = fair.judge(user=1, chat=1, now=20.0)
    assert refused is not None and refused.reason == "rate" and refused.tell
    assert refused.retry_in == 40.0
    silent = fair.judge(user=1, chat=1, now=30.0)
    assert silent is not None and not silent.tell
    assert fair.judge(user=2, chat=1, now=30.0) is None  # per person
    assert fair.judge(user=1, chat=1, now=60.0) is None  # the first one left the window
    # A new run of refusals is told again.
    told = fair.judge(user=1, chat=1, now=61.0)
    assert told is not None and told.tell


def test_the_token_budget_and_the_backlog() -> None:
    fair = FairUse(Limits(tokens_per_day=100, chat_waiting=3))
    assert fair.judge(user=1, chat=-5, now=0.0, tokens_today=99, waiting=2) is None
    over = fair.judge(user=1, chat=-5, now=1.0, tokens_today=100, day_left=3600.0)
    assert over is not None and over.reason == "tokens" and over.retry_in == 3600.0
    assert over.tell
    again = fair.judge(user=1, chat=-5, now=2.0, tokens_today=120)
    assert again is not None and not again.tell
    full = fair.judge(user=2, chat=-5, now=3.0, waiting=3)
    assert full is not None and full.reason == "backlog" and full.retry_in is None
    # No limits: everything passes.
    free = FairUse(Limits())
    assert all(free.judge(user=1, chat=1, now=float(i), tokens_today=10**9, waiting=99) is None
               for i in range(100))


def test_seconds_to_midnight_utc() -> None:
    assert seconds_to_midnight(datetime(2026, 1, 1, 23, 0, tzinfo=UTC)) == 3600.0
    assert seconds_to_midnight(datetime(2026, 1, 1, 0, 0, tzinfo=UTC)) == 86400.0
