"""Saved KV states and their checksum: a state whose bytes changed on disk is refused, and so is
a file of the first format, which had none."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest

from bot.engine.statestore import OLD_MAGIC, DamagedState, StateStore

DATA = bytes(range(256)) * 16


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_an_intact_state_is_read_and_mapped(tmp_path: Path) -> None:
    store = StateStore(tmp_path, 1 << 20, "model-a")
    store.save("chat", [5, 6, 7], DATA)
    saved = store.find("chat")
    assert saved is not None and saved.tokens == [5, 6, 7]
    with store.mapped(saved) as view:
        assert bytes(view) == DATA
    buffer = bytearray(saved.data_size)
    store.read_into(saved, buffer)
    assert bytes(buffer) == DATA


@pytest.mark.parametrize("where", ["first data byte", "last data byte", "a token"])
def test_a_changed_byte_is_refused(tmp_path: Path, where: str) -> None:
    store = StateStore(tmp_path, 1 << 20, "model-a")
    store.save("chat", [5, 6, 7], DATA)
    saved = store.find("chat")
    assert saved is not None
    offset = {"first data byte": saved.data_offset, "last data byte": saved.file_size - 1,
              "a token": saved.data_offset - 8}[where]
    flip(saved.path, offset)
    again = store.find("chat")  # header and length are intact: found, then refused when read
    assert again is not None
    with pytest.raises(DamagedState, match="does not match its checksum"):
        with store.mapped(again):
            pass
    with pytest.raises(DamagedState):
        store.read_into(again, bytearray(again.data_size))


def test_a_state_without_a_checksum_is_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(tmp_path, 1 << 20, "model-a")
    path = store.path_for("chat")
    header = json.dumps({"model": "model-a", "chat": "chat", "n_tokens": 1}).encode()
    path.write_bytes(OLD_MAGIC + struct.pack("<I", len(header)) + header
                     + struct.pack("<i", 5) + DATA)
    with caplog.at_level(logging.WARNING, logger="bot.engine.statestore"):
        assert store.find("chat") is None
    assert not path.exists()
    assert "without a checksum by an older version" in caplog.text


def test_forgetting_a_chat_deletes_its_states_of_every_model_and_no_other_chats(
        tmp_path: Path) -> None:
    before_switch = StateStore(tmp_path, 1 << 20, "model-a")
    before_switch.save("7", [1, 2], DATA)
    before_switch.save("8", [1, 2], DATA)
    now = StateStore(tmp_path, 1 << 20, "model-b")
    now.save("7", [3, 4], DATA)
    now.delete("7")
    assert now.find("7") is None and before_switch.find("7") is None
    assert before_switch.find("8") is not None
