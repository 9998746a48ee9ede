"""Saved KV states of chats on disk: one file per chat and model, bounded in total size.

A file holds a header (the model identity, the chat it belongs to and a checksum of the rest),
the chat's evaluated tokens and the bytes of `llama_state_seq_get_data`. The model identity (file
path, size, modification time and KV cache type) is part of the file name and checked again in
the header, so a state computed by another model, or another build of the same file, is never
loaded; a file whose bytes changed on disk is refused (`DamagedState`), and so is a file of the
first format, which carried no checksum. When the directory grows past its bound, the least
recently used files go first (loading a file refreshes its time). Pure file handling: the bytes
come from and go to the worker pool.
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import mmap
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAGIC = b"ALPACA-BOT-KV\x02"
"""The second format: the header carries a CRC-32 of the tokens and the state bytes."""
OLD_MAGIC = b"ALPACA-BOT-KV\x01"
SUFFIX = ".kvstate"
_HEADER_LEN = struct.Struct("<I")


class DamagedState(ValueError):
    """A state file whose bytes are not the ones written: it must not be loaded."""


def checksum(*parts: Any, start: int = 0) -> int:
    """CRC-32 over buffers, in order (continuing from `start`).

    It detects bytes changed on disk (a bad sector, a partial overwrite, a copy gone wrong),
    not tampering: whoever can write the file can write its header too. CRC-32 runs at about
    twice the speed of SHA-256 here, and eviction waits for it on the worker thread.
    """
    value = start
    for part in parts:
        value = zlib.crc32(part, value)
    return value


def model_identity(model_path: Path, *extra: object) -> str:
    """A short hash of what makes a saved state valid: the model file as it is now, and `extra`."""
    resolved = model_path.resolve()
    stat = resolved.stat()
    text = "\n".join([str(resolved), str(stat.st_size), str(stat.st_mtime_ns), *map(str, extra)])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _chat_part(chat_key: str) -> str:
    """The chat's part of a state file's name, the same for every model."""
    return hashlib.sha256(chat_key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class SavedState:
    """A state file found for a chat: its tokens, and where its data starts."""

    path: Path
    tokens: list[int]
    data_offset: int
    data_size: int
    checksum: int
    """CRC-32 of the token list's bytes and the data, as written."""
    tokens_checksum: int
    """CRC-32 of the token list's bytes alone (the data's check continues from it)."""

    @property
    def file_size(self) -> int:
        return self.data_offset + self.data_size


class StateStore:
    """State files of one model in one directory, bounded to `max_bytes` in total."""

    def __init__(self, directory: Path, max_bytes: int, identity: str) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.identity = identity
        directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, chat_key: str) -> Path:
        return self.directory / f"{self.identity}-{_chat_part(chat_key)}{SUFFIX}"

    def save(self, chat_key: str, tokens: list[int], data: Any) -> int:
        """Write the state (atomically), then enforce the bound; returns the bytes written.

        `data` is any object with the buffer protocol (a ctypes array is not copied again).
        Returns 0 when the state alone is larger than the bound (nothing is kept).
        """
        packed = array.array("i", tokens)
        if sys.byteorder != "little":
            packed.byteswap()
        view = memoryview(data).cast("B")
        header = json.dumps({
            "model": self.identity, "chat": chat_key, "n_tokens": len(tokens),
            "crc32": checksum(packed, view),
        }).encode()
        size = len(MAGIC) + _HEADER_LEN.size + len(header) + len(packed) * 4 + view.nbytes
        target = self.path_for(chat_key)
        if size > self.max_bytes:
            target.unlink(missing_ok=True)
            log.info("state of chat %s not saved: %d bytes exceed the bound of %d",
                     chat_key, size, self.max_bytes)
            return 0
        fd, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(MAGIC)
                handle.write(_HEADER_LEN.pack(len(header)))
                handle.write(header)
                handle.write(packed.tobytes())
                handle.write(view)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._enforce_bound(keep=target)
        return size

    def find(self, chat_key: str) -> SavedState | None:
        """The chat's saved state of this model, or None (an unusable file is deleted).

        Only the header and tokens are read here; the data's checksum is checked when the
        data is read (`mapped`, `read_into`).
        """
        path = self.path_for(chat_key)
        try:
            with path.open("rb") as handle:
                magic = handle.read(len(MAGIC))
                if magic == OLD_MAGIC:
                    raise ValueError("written without a checksum by an older version")
                if magic != MAGIC:
                    raise ValueError("not a state file")
                (length,) = _HEADER_LEN.unpack(handle.read(_HEADER_LEN.size))
                header = json.loads(handle.read(length))
                if header.get("model") != self.identity or header.get("chat") != chat_key:
                    raise ValueError("state of another model or chat")
                n_tokens = int(header["n_tokens"])
                crc = int(header["crc32"])
                packed = array.array("i")
                packed.frombytes(handle.read(4 * n_tokens))
                if len(packed) != n_tokens:
                    raise ValueError("truncated token list")
                tokens_crc = checksum(packed)  # over the tokens as stored (little-endian)
                if sys.byteorder != "little":
                    packed.byteswap()
                offset = handle.tell()
            size = path.stat().st_size - offset
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
            log.warning("dropping unusable state file %s: %s", path, exc)
            path.unlink(missing_ok=True)
            return None
        return SavedState(path=path, tokens=packed.tolist(), data_offset=offset, data_size=size,
                          checksum=crc, tokens_checksum=tokens_crc)

    def verify(self, saved: SavedState, data: Any) -> None:
        """Raise DamagedState unless `data` (the state's bytes) matches the file's checksum."""
        if checksum(data, start=saved.tokens_checksum) != saved.checksum:
            raise DamagedState(f"state file {saved.path.name} does not match its checksum")

    def read_into(self, saved: SavedState, buffer: Any) -> None:
        """Read the state's data into `buffer` (writable, `saved.data_size` bytes) and check it
        (DamagedState)."""
        view = memoryview(buffer).cast("B")
        with saved.path.open("rb") as handle:
            handle.seek(saved.data_offset)
            if handle.readinto(view) != saved.data_size:
                raise OSError(f"state file {saved.path} is truncated")
        self.verify(saved, view)
        os.utime(saved.path)  # recently used: dropped last

    @contextmanager
    def mapped(self, saved: SavedState) -> Iterator[memoryview]:
        """The state's data mapped from its file, checked against its checksum (DamagedState).

        The mapping is copy-on-write (writable for ctypes, never written back) and lives
        until the block ends. A restore that reads the file into a buffer first spends as
        long filling the buffer as llama.cpp spends loading the state; the checksum reads the
        pages once, and llama.cpp then finds them in memory.
        """
        with saved.path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size != saved.file_size or saved.data_size == 0:
                raise OSError(f"state file {saved.path} changed size or is empty")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY) as mapping:
                if hasattr(mapping, "madvise"):
                    mapping.madvise(mmap.MADV_WILLNEED)
                view = memoryview(mapping)[saved.data_offset :]
                try:
                    self.verify(saved, view)
                    yield view
                finally:
                    view.release()
        os.utime(saved.path)  # recently used: dropped last

    def delete(self, chat_key: str) -> None:
        """Delete the chat's states of every model: those saved before a /model switch are
        the chat's conversation too."""
        for path in self.directory.glob(f"*-{_chat_part(chat_key)}{SUFFIX}"):
            path.unlink(missing_ok=True)

    def total_bytes(self) -> int:
        """Bytes of all state files in the directory (of every model)."""
        return sum(size for _, _, size in self._files())

    def _files(self) -> list[tuple[float, Path, int]]:
        found = []
        for path in self.directory.glob(f"*{SUFFIX}"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found.append((stat.st_mtime, path, stat.st_size))
        return found

    def _enforce_bound(self, keep: Path) -> None:
        files = sorted(self._files())
        total = sum(size for _, _, size in files)
        for _, path, size in files:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            log.info("dropped saved state %s (%d bytes) to stay under %d bytes",
                     path.name, size, self.max_bytes)
