"""What a model needs in RAM to serve chats, and how much this machine has for it.

RAM needed = the model file (llama.cpp maps it whole) + the KV cache of `slots × max_ctx`
tokens (allocated at start, capped by the model's trained context), computed from the GGUF
header alone. The default budget is the kernel's MemAvailable minus a margin for the rest of
the process (compute buffers, Python, the database).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bot.errors import ModelError
from bot.llama.gguf_file import GGUFInfo

_MARGIN_SHARE = 0.10
_MARGIN_MIN = 256 << 20


@dataclass(frozen=True)
class KVCacheSize:
    """The KV cache a configuration allocates: `slots` sequences of `n_ctx` tokens."""

    slots: int
    n_ctx: int
    bytes_per_token: int

    @property
    def bytes(self) -> int:
        return self.slots * self.n_ctx * self.bytes_per_token


def kv_bytes_per_token(info: GGUFInfo, kv_type: str = "f16") -> int:
    """Keys and values of every layer for one token: n_layer × n_head_kv × (k + v head size)."""
    arch = info.architecture
    meta = info.metadata

    def number(key: str, default: int | None = None) -> int:
        value = meta.get(f"{arch}.{key}", default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ModelError(f"{info.path.name} has no {arch}.{key} in its header")
        return value

    n_layer = number("block_count")
    n_head = number("attention.head_count")
    n_head_kv = number("attention.head_count_kv", n_head)
    head = number("embedding_length") // max(n_head, 1)
    k_len = number("attention.key_length", head)
    v_len = number("attention.value_length", head)
    element = 34 / 32 if kv_type == "q8_0" else 2  # q8_0: 32 values in 34 bytes
    return int(n_layer * n_head_kv * (k_len + v_len) * element)


def kv_cache_size(info: GGUFInfo, *, slots: int, max_ctx: int, kv_type: str) -> KVCacheSize:
    """The cache the pool engine allocates for this model: each slot sized like `max_ctx`,
    never beyond the trained context."""
    n_ctx = max_ctx
    trained = info.context_length
    if trained is not None and 0 < trained < n_ctx:
        n_ctx = trained
    return KVCacheSize(slots=slots, n_ctx=n_ctx, bytes_per_token=kv_bytes_per_token(info, kv_type))


def available_memory() -> int:
    """Bytes the kernel could give a new process without swapping (MemAvailable)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_budget(available: int | None = None) -> int:
    """Available memory minus a margin: 10%, at least 256 MiB."""
    available = available_memory() if available is None else available
    return max(available - max(int(available * _MARGIN_SHARE), _MARGIN_MIN), 0)
