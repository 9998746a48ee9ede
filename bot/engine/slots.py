"""Slots: the sequences of one llama.cpp context, each holding one chat's evaluated tokens.

`SlotContext` owns the model, the context (one KV stream per slot), the batch and the per-slot
memory edits; every method must be called from the one worker thread. `plan_reuse` (pure)
decides how much of a slot's cache a new prompt can keep: the longest common prefix, or, when a
window slid and a middle block of old turns dropped out, the prefix plus the moved rest.
"""

from __future__ import annotations

import ctypes
import enum
import mmap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.engine.native import kv_bytes_per_token
from bot.errors import ModelError
from bot.i18n import _
from bot.llama.loading import model_params


class SlotState(enum.Enum):
    EMPTY = "empty"
    IDLE = "idle"
    PROMPT = "prompt"
    GENERATING = "generating"


@dataclass
class Slot:
    """One sequence of the context: whose chat it holds and which tokens are in its cache."""

    seq_id: int
    state: SlotState = SlotState.EMPTY
    chat_key: str | None = None
    tokens: list[int] = field(default_factory=list)
    """Tokens in the KV cache at positions 0..len-1."""
    last_used: float = 0.0

    @property
    def busy(self) -> bool:
        return self.state in (SlotState.PROMPT, SlotState.GENERATING)

    def reset(self) -> None:
        self.state = SlotState.EMPTY
        self.chat_key = None
        self.tokens = []


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class ReusePlan:
    """Keep `keep` tokens; move `moved` tokens found at `moved_from` in the cache to follow them.

    After the plan, the cache holds the new prompt's first `reused` tokens.
    """

    keep: int
    moved_from: int = 0
    moved: int = 0

    @property
    def reused(self) -> int:
        return self.keep + self.moved

    @property
    def shift(self) -> int:
        return self.moved_from - self.keep


def plan_reuse(
    cached: Sequence[int], new: Sequence[int], *, allow_shift: bool, min_moved: int = 32
) -> ReusePlan:
    """How much of `cached` the prompt `new` can keep; at least its last token is evaluated.

    With `allow_shift`, a block missing from the middle (old turns that left the window) is
    detected: `new` = cached[:keep] + cached[moved_from:moved_from + moved] + more. The moved
    part is used only if it is at least `min_moved` tokens long.
    """
    limit = len(new) - 1  # the last prompt token must be evaluated to get its logits
    keep = min(common_prefix(cached, new), limit)
    best = ReusePlan(keep)
    if not allow_shift or limit - keep < min_moved:
        return best
    target = new[keep:limit]
    first = target[0]
    for start in range(keep + 1, len(cached) - min_moved + 1):
        if cached[start] != first:
            continue
        moved = common_prefix(cached[start:], target)
        if moved >= min_moved and moved > best.moved:
            best = ReusePlan(keep, start, moved)
    return best


BatchRow = tuple[int, int, Sequence[int], int]
"""One sequence's part of a batch: (seq_id, position of the first token, tokens, how many of
its last tokens have their logits wanted: 1 to sample after it, all of a row of drafts to
check them, 0 for none)."""


class SlotContext:
    """One model and one context with `n_slots` sequences of `n_ctx` tokens each."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_slots: int,
        n_ctx: int,
        threads: int,
        batch: int,
        kv_type: str,
        rows_as_alone: bool = False,
    ) -> None:
        """`rows_as_alone`: a token's logits are bit for bit the same alone or in a row of
        drafts (flash attention, then on for f16 too; see `_context_params`)."""
        import llama_cpp

        llama_cpp.llama_backend_init()
        self._lib = llama_cpp
        self.model: Any = None
        self.ctx: Any = None
        self._batch: Any = None
        self.model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), model_params())
        if not self.model:
            raise ModelError(_(
                "cannot load model {path} (is it a complete GGUF file of a supported "
                "architecture?)", path=model_path,
            ))
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self.model))
        if 0 < self.n_ctx_train < n_ctx:
            n_ctx = self.n_ctx_train  # never size a slot beyond the trained context
        params = _context_params(llama_cpp, n_ctx=n_ctx, n_slots=n_slots, threads=threads,
                                 batch=batch, kv_type=kv_type, rows_as_alone=rows_as_alone)
        self.flash_attention = params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            self.close()
            raise ModelError(_(
                "llama.cpp cannot create a context of {slots} x {n_ctx} tokens for {path}",
                slots=n_slots, n_ctx=n_ctx, path=model_path,
            ))
        self.n_slots = n_slots
        self.n_ctx = int(llama_cpp.llama_n_ctx_seq(self.ctx))
        self.batch_size = batch
        self._batch = llama_cpp.llama_batch_init(batch, 0, 1)
        # The batch's arrays, fetched once: every attribute read of a ctypes structure builds
        # a new pointer object, and decoding writes them for every token.
        self._b_token = self._batch.token
        self._b_pos = self._batch.pos
        self._b_logits = self._batch.logits
        for i in range(batch):
            self._batch.n_seq_id[i] = 1
        self._b_seq = [self._batch.seq_id[i] for i in range(batch)]
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.can_shift = bool(llama_cpp.llama_memory_can_shift(self.memory))
        # A recurrent state cannot lose its last tokens: such models cannot check drafts.
        self.can_truncate = not (llama_cpp.llama_model_is_recurrent(self.model)
                                 or llama_cpp.llama_model_is_hybrid(self.model))
        self.kv_bytes_per_token = kv_bytes_per_token(self.model, kv_type)

    def warm_up(self) -> None:
        """One throw-away decode, as llama.cpp's tools do after loading.

        The first decode of a context pages the mapped weights in and sets up the compute
        threads; done here, the first chat after a start does not pay for it. Call it from the
        thread that will decode.
        """
        self.decode([(0, 0, [max(self.bos, 0)], 1)])
        self._lib.llama_memory_seq_rm(self.memory, 0, -1, -1)

    def close(self) -> None:
        lib = self._lib
        if self._batch is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if self.ctx:
            lib.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            lib.llama_model_free(self.model)
            self.model = None

    # -- memory edits (positions are token indices) ------------------------------------

    def clear(self, slot: Slot) -> None:
        self._lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
        slot.tokens = []

    def apply(self, slot: Slot, plan: ReusePlan) -> None:
        """Edit the slot's cache as planned; its tokens are then the kept and moved ones."""
        lib, memory, seq = self._lib, self.memory, slot.seq_id
        if plan.moved:
            end = plan.moved_from + plan.moved
            lib.llama_memory_seq_rm(memory, seq, end, -1)
            lib.llama_memory_seq_rm(memory, seq, plan.keep, plan.moved_from)
            lib.llama_memory_seq_add(memory, seq, plan.moved_from, end, -plan.shift)
            slot.tokens = slot.tokens[: plan.keep] + slot.tokens[plan.moved_from : end]
        else:
            if not lib.llama_memory_seq_rm(memory, seq, plan.keep, -1):
                lib.llama_memory_seq_rm(memory, seq, -1, -1)
                slot.tokens = []
                return
            del slot.tokens[plan.keep :]

    def truncate(self, slot: Slot, n_tokens: int) -> None:
        """Keep the slot's first `n_tokens` tokens in its cache and drop the rest (drafted
        tokens the model did not write)."""
        if n_tokens >= len(slot.tokens):
            return
        if not self._lib.llama_memory_seq_rm(self.memory, slot.seq_id, n_tokens, -1):
            raise ModelError(f"llama.cpp cannot cut sequence {slot.seq_id} at {n_tokens}")
        del slot.tokens[n_tokens:]

    def copy_prefix(self, source: Slot, target: Slot, n_tokens: int) -> None:
        """Give `target` the first `n_tokens` of `source`'s cache without evaluating them.

        Across KV streams llama.cpp copies a whole stream (on the next decode); the tail
        beyond the shared prefix is then removed.
        """
        lib = self._lib
        lib.llama_memory_seq_rm(self.memory, target.seq_id, -1, -1)
        lib.llama_memory_seq_cp(self.memory, source.seq_id, target.seq_id, -1, -1)
        lib.llama_memory_seq_rm(self.memory, target.seq_id, n_tokens, -1)
        target.tokens = source.tokens[:n_tokens]

    def pos_max(self, slot: Slot) -> int:
        return int(self._lib.llama_memory_seq_pos_max(self.memory, slot.seq_id))

    # -- states ---------------------------------------------------------------------------

    def state_data(self, slot: Slot) -> mmap.mmap:
        """The slot's sequence state, in anonymous memory (close it when written out).

        Not a ctypes array: Python would first fill one with zeros, which for tens of
        megabytes costs as much as copying the state itself.
        """
        lib = self._lib
        size = lib.llama_state_seq_get_size(self.ctx, slot.seq_id)
        memory = mmap.mmap(-1, max(size, 1))
        target = (ctypes.c_uint8 * size).from_buffer(memory)
        try:
            written = lib.llama_state_seq_get_data(self.ctx, target, size, slot.seq_id)
        finally:
            del target  # the mmap cannot be closed while a ctypes view of it exists
        if written != size:
            memory.close()
            raise ModelError(f"llama.cpp wrote {written} of {size} state bytes")
        return memory

    def load_state(self, slot: Slot, data: memoryview, tokens: list[int]) -> bool:
        """Put a saved state into the slot; False (and an empty slot) if llama.cpp refuses it.

        `data` must be writable (a copy-on-write file mapping is); llama.cpp only reads it.
        """
        lib = self._lib
        lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
        size = data.nbytes
        source = (ctypes.c_uint8 * size).from_buffer(data)
        try:
            loaded = lib.llama_state_seq_set_data(self.ctx, source, size, slot.seq_id)
        finally:
            del source
        if not loaded or self.pos_max(slot) != len(tokens) - 1:
            lib.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            slot.tokens = []
            return False
        slot.tokens = list(tokens)
        return True

    # -- decoding -------------------------------------------------------------------------

    def decode(self, rows: Sequence[BatchRow]) -> None:
        """Evaluate one batch (at most `batch_size` tokens); raise ModelError on failure.

        Tokens are numbered in the order of `rows`: that index is what `logits` and the
        sampler take. With one KV stream per slot, llama.cpp evaluates sequences together
        only when their ids follow each other in increasing order (else it makes a separate
        pass over the weights for each run): order rows by seq_id.
        """
        token, pos, logits, seq = self._b_token, self._b_pos, self._b_logits, self._b_seq
        i = 0
        for seq_id, start, tokens, outputs in rows:
            first_output = len(tokens) - outputs
            for k, value in enumerate(tokens):
                token[i] = value
                pos[i] = start + k
                seq[i][0] = seq_id
                logits[i] = k >= first_output
                i += 1
        self._batch.n_tokens = i
        code = self._lib.llama_decode(self.ctx, self._batch)
        if code != 0:
            raise ModelError(f"llama_decode failed with code {code}")

    def logits(self, index: int) -> NDArray[np.float32]:
        """A copy of the logits of batch row `index` of the last decode."""
        pointer = self._lib.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()


LONE_TOKEN_CELLS = 256
"""On an f16 cache, llama.cpp's CPU flash attention computes a step's part that is one token of
one sequence (a ubatch of its own) split over the threads by cells once the sequence's stream
holds more than this many cells (it pads a stream's attention to 256 cells, and splits from
512), so that token's logits, and the cache entries it leaves, are not bit for bit those of the
same token in a row of two or more (which every other part takes, as below 257 cells). A
drafting pool never lets a chat's token be computed that way (`Drafting`)."""


def _context_params(llama_cpp: Any, *, n_ctx: int, n_slots: int, threads: int, batch: int,
                    kv_type: str, rows_as_alone: bool) -> Any:
    """The context's parameters: `n_slots` sequences of `n_ctx` tokens each."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx * n_slots
    params.n_seq_max = n_slots
    # One KV stream per slot: a sequence attends only to its own cells, and each slot has
    # exactly n_ctx cells. (A unified cache would make every token attend over all chats'
    # cells, masked.)
    params.kv_unified = False
    params.n_batch = params.n_ubatch = batch
    params.n_threads = params.n_threads_batch = threads
    params.no_perf = True
    if kv_type == "q8_0":
        params.type_k = params.type_v = llama_cpp.GGML_TYPE_Q8_0
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED  # quantized V
    elif kv_type == "f16":
        params.type_k = params.type_v = llama_cpp.GGML_TYPE_F16
        # Without flash attention a CPU step is faster over long caches, but a token's
        # attention comes out rounded differently in a row of several tokens than alone, so
        # speculative decoding's rows (rows_as_alone) need it for replies written token by token.
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if rows_as_alone
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    else:
        raise ValueError(f"unknown KV cache type {kv_type!r} (f16 or q8_0)")
    return params
