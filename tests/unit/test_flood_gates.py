"""The table of flood gates keeps the chats answered lately, not every chat ever answered, and
never forgets a ban that is still running."""

from __future__ import annotations

from bot.telegram.flood import GATE_IDLE, SWEEP_PAST, FloodGates


def test_idle_gates_leave_the_table_as_it_grows() -> None:
    now = [0.0]
    gates = FloodGates(clock=lambda: now[0])
    for chat in range(10 * SWEEP_PAST):
        gates.of(chat, 1.0).called()
        now[0] += 1.0
    # Chats answered within GATE_IDLE seconds stay; the table never reached twice that.
    assert len(gates) <= 2 * max(SWEEP_PAST, int(GATE_IDLE) + 1)
    assert len(gates) >= GATE_IDLE


def test_a_gate_is_the_same_while_the_chat_is_answered() -> None:
    now = [0.0]
    gates = FloodGates(clock=lambda: now[0])
    first = gates.of(1, 1.0)
    first.called()
    for chat in range(2, 3 * SWEEP_PAST):
        gates.of(chat, 1.0)
        now[0] += 0.1
        first.called()  # chat 1 keeps being answered
    assert gates.of(1, 1.0) is first


def test_a_running_ban_is_never_forgotten() -> None:
    now = [0.0]
    gates = FloodGates(clock=lambda: now[0])
    banned = gates.of(1, 1.0)
    banned.banned(now[0], 3 * GATE_IDLE)  # a long 429 on chat 1
    for chat in range(2, 3 * SWEEP_PAST):
        now[0] += GATE_IDLE / SWEEP_PAST
        gates.of(chat, 1.0)
    assert gates.of(1, 1.0) is banned
    assert banned.ready_at() > now[0]
