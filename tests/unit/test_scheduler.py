"""The engines' parts without a model: who starts next, how much of a cache a prompt keeps,
state files. (The request path itself: tests/unit/test_requests.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine.scheduler import FairQueue
from bot.engine.slots import ReusePlan, common_prefix, plan_reuse
from bot.engine.statestore import StateStore, model_identity

# -- FairQueue --------------------------------------------------------------------------------


def drain(queue: FairQueue[str]) -> list[str]:
    """Start and finish requests one at a time (one slot)."""
    started = []
    while (popped := queue.pop()) is not None:
        chat, item = popped
        started.append(item)
        queue.done(chat)
    return started


def test_chats_take_turns_instead_of_first_come_first_served() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(1, 6):
        queue.push("A", f"A{i}")
    queue.push("B", "B1")
    queue.push("C", "C1")
    queue.push("B", "B2")
    assert queue.order() == ["A1", "B1", "C1", "A2", "B2", "A3", "A4", "A5"]
    assert drain(queue) == ["A1", "B1", "C1", "A2", "B2", "A3", "A4", "A5"]
    assert len(queue) == 0


def test_a_chat_that_just_started_waits_for_the_others() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(1, 6):
        queue.push("A", f"A{i}")
    chat, first = queue.pop() or ("", "")
    assert first == "A1"
    queue.push("B", "B1")  # arrives while A1 runs
    queue.done(chat)
    assert queue.order()[:2] == ["B1", "A2"]
    assert drain(queue)[:2] == ["B1", "A2"]


def test_one_running_request_per_chat() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("A", "A1")
    queue.push("A", "A2")
    queue.push("B", "B1")
    assert queue.pop() == ("A", "A1")
    assert queue.pop() == ("B", "B1")
    assert queue.pop() is None  # A2 waits for A1 even with a free slot
    assert queue.running("A")
    queue.done("A")
    assert queue.pop() == ("A", "A2")


def test_removing_a_cancelled_request() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("A", "A1")
    queue.push("A", "A2")
    queue.push("B", "B1")
    assert queue.remove("A1") and not queue.remove("A1")
    assert "A1" not in queue and "A2" in queue
    assert queue.order() == ["A2", "B1"]
    assert queue.remove("B1")
    assert drain(queue) == ["A2"]
    queue.push("A", "A9")
    with pytest.raises(ValueError):
        queue.push("A", "A9")


def test_a_quiet_chat_coming_back_is_not_behind_a_busy_one() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("B", "B1")
    assert drain(queue) == ["B1"]  # B is quiet again: it keeps no turn stamp
    queue.push("A", "A1")
    queue.push("A", "A2")
    chat, _ = queue.pop() or ("", "")
    queue.done(chat)
    queue.push("B", "B2")
    assert queue.order() == ["B2", "A2"]


# -- plan_reuse -------------------------------------------------------------------------------


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_plan_keeps_the_common_prefix_and_always_evaluates_the_last_token() -> None:
    cached = list(range(100))
    assert plan_reuse(cached, cached[:50] + [999] * 5, allow_shift=False) == ReusePlan(50)
    assert plan_reuse(cached, cached, allow_shift=False).reused == 99
    assert plan_reuse(cached, cached[:40], allow_shift=False).reused == 39
    assert plan_reuse([], [1, 2, 3], allow_shift=True).reused == 0


def test_plan_finds_a_window_that_slid() -> None:
    system = list(range(1000, 1020))
    turns = [list(range(2000 + 100 * i, 2000 + 100 * i + 40)) for i in range(5)]
    cached = system + [t for turn in turns for t in turn]
    new = system + [t for turn in turns[2:] for t in turn] + [7, 8, 9]
    plan = plan_reuse(cached, new, allow_shift=True)
    assert plan.keep == 20 and plan.moved_from == 20 + 80 and plan.moved == 120
    assert plan.shift == 80 and plan.reused == 140
    assert cached[: plan.keep] + cached[plan.moved_from : plan.moved_from + plan.moved] == new[:140]
    assert plan_reuse(cached, new, allow_shift=False) == ReusePlan(20)
    # A moved block shorter than min_moved is not worth a shift.
    assert plan_reuse(cached, new, allow_shift=True, min_moved=200) == ReusePlan(20)


# -- StateStore -------------------------------------------------------------------------------


def test_state_files_round_trip_and_belong_to_one_model(tmp_path: Path) -> None:
    store = StateStore(tmp_path, 1 << 20, "model-a")
    data = bytes(range(256)) * 4
    written = store.save("chat 1", [1, 2, 3, 70000], data)
    assert written == store.total_bytes()
    saved = store.find("chat 1")
    assert saved is not None and saved.tokens == [1, 2, 3, 70000] and saved.data_size == len(data)
    buffer = bytearray(saved.data_size)
    store.read_into(saved, buffer)
    assert bytes(buffer) == data
    assert store.find("chat 2") is None
    assert StateStore(tmp_path, 1 << 20, "model-b").find("chat 1") is None
    store.delete("chat 1")
    assert store.find("chat 1") is None


def test_a_damaged_state_file_is_dropped(tmp_path: Path) -> None:
    store = StateStore(tmp_path, 1 << 20, "model-a")
    store.save("chat", [1, 2], b"x" * 10)
    path = store.path_for("chat")
    path.write_bytes(path.read_bytes()[:20])
    assert store.find("chat") is None
    assert not path.exists()


def test_the_bound_drops_the_least_recently_used_files(tmp_path: Path) -> None:
    import os

    store = StateStore(tmp_path, 3000, "model-a")
    for i in range(3):
        store.save(f"chat {i}", [i], b"x" * 900)
        path = store.path_for(f"chat {i}")
        os.utime(path, (1000 + i, 1000 + i))
    saved = store.find("chat 0")
    assert saved is not None
    store.read_into(saved, bytearray(saved.data_size))  # chat 0 is now the most recent
    store.save("chat 3", [3], b"x" * 900)
    assert store.total_bytes() <= 3000
    assert store.find("chat 1") is None
    assert store.find("chat 0") is not None and store.find("chat 3") is not None
    assert store.save("huge", [1], b"x" * 5000) == 0 and store.find("huge") is None


def test_model_identity_changes_with_the_file(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF one")
    first = model_identity(model, "f16")
    assert model_identity(model, "f16") == first
    assert model_identity(model, "q8_0") != first
    model.write_bytes(b"GGUF two!")
    assert model_identity(model, "f16") != first
