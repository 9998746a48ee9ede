"""The pool's cache policy: which slot a chat gets, whose KV cache is evicted (saved to disk),
and how much of a prompt comes back without evaluating it (the chat's own cache, a saved state,
or a prefix copied from another slot)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from bot.engine.slots import Slot, SlotContext, SlotState, common_prefix, plan_reuse
from bot.engine.statestore import DamagedState, SavedState, StateStore

log = logging.getLogger(__name__)

MIN_SHARED_PREFIX = 16
"""A prefix shared with another slot is copied only from this many tokens on."""


class SlotCache:
    """The slots of one context and the saved states of chats that left them."""

    def __init__(
        self, ctx: SlotContext, store: StateStore | None, *, model_path: Path, window_shift: bool
    ) -> None:
        self._ctx = ctx
        self.store = store
        self.slots = [Slot(seq_id) for seq_id in range(ctx.n_slots)]
        self._window_shift = window_shift
        size = model_path.stat().st_size
        # The cost model's first guesses (replaced by measurements): prompt tokens per second
        # shrink with the model's size; a state file comes back at page-cache/SSD speed.
        self.prompt_rate = max(1.0, 1.4e10 / max(size, 1))
        self._read_rate = 5e8

    def slot_for(self, chat_key: str) -> Slot:
        """The chat's own idle slot, else a free one (evicting an idle chat if none is)."""
        for slot in self.slots:
            if slot.chat_key == chat_key and not slot.busy:
                return slot
        # llama.cpp evaluates the slots of one step in a single pass over the weights only
        # when their seq_ids are consecutive, so a new chat goes next to the busy slots:
        # an empty slot if one is adjacent, else the least recently used adjacent idle chat
        # is evicted (it costs a restore later; a gap costs a whole pass on every token).
        empty = [slot for slot in self.slots if slot.state is SlotState.EMPTY]
        if empty:
            return min(empty, key=lambda slot: (self._runs_with(slot), slot.seq_id))
        idle = [slot for slot in self.slots if slot.state is SlotState.IDLE]
        victim = min(idle, key=lambda slot: (self._runs_with(slot), slot.last_used))
        self.evict(victim)
        return victim

    def _runs_with(self, candidate: Slot) -> int:
        """Runs of consecutive busy seq_ids if `candidate` became busy too."""
        runs = 0
        previous = False
        for slot in self.slots:
            busy = slot.busy or slot is candidate
            runs += busy and not previous
            previous = busy
        return runs

    def evict(self, slot: Slot) -> None:
        """Empty a slot, saving its chat's state first where there is a state directory."""
        if self.store is not None and slot.chat_key is not None and slot.tokens:
            try:
                started = time.monotonic()
                with self._ctx.state_data(slot) as data:
                    written = self.store.save(slot.chat_key, slot.tokens, data)
                log.info("chat %s saved to disk: %d tokens, %d bytes in %.2f s", slot.chat_key,
                         len(slot.tokens), written, time.monotonic() - started)
            except OSError:
                log.exception("cannot save the state of chat %s", slot.chat_key)
        self._ctx.clear(slot)
        slot.reset()

    def forget(self, chat_key: str) -> None:
        """Drop the chat's cache: the tokens of its idle slot and its saved state file (a slot
        writing a reply is left alone; the chat side forgets a chat only when it is quiet)."""
        for slot in self.slots:
            if slot.chat_key == chat_key and not slot.busy:
                self._ctx.clear(slot)
                slot.reset()
        if self.store is not None:
            self.store.delete(chat_key)

    def evict_all(self) -> None:
        for slot in self.slots:
            if slot.chat_key is not None:
                self.evict(slot)

    def reuse(self, slot: Slot, chat_key: str, tokens: Sequence[int]) -> bool:
        """Fill the slot with as much of the prompt as can be had without evaluating it.

        Returns False when llama.cpp still has to apply a copy or shift at the next decode.
        """
        allow_shift = self._window_shift and self._ctx.can_shift
        if slot.chat_key == chat_key:
            plan = plan_reuse(slot.tokens, tokens, allow_shift=allow_shift)
            self._ctx.apply(slot, plan)
            return not plan.moved
        donor, shared = self._best_donor(slot, tokens)
        saved = self.store.find(chat_key) if self.store is not None else None
        if saved is not None:
            plan = plan_reuse(saved.tokens, tokens, allow_shift=allow_shift)
            if plan.reused > shared and self._restore_pays(saved.file_size, plan.reused - shared):
                if self._restore(slot, saved, chat_key):
                    self._ctx.apply(slot, plan)
                    return not plan.moved
        self._ctx.clear(slot)
        if donor is not None and shared >= MIN_SHARED_PREFIX:
            self._ctx.copy_prefix(donor, slot, shared)
            log.debug("chat %s: copied %d prompt tokens from slot %d", chat_key, shared,
                      donor.seq_id)
            return False
        return True

    def _best_donor(self, target: Slot, tokens: Sequence[int]) -> tuple[Slot | None, int]:
        best: Slot | None = None
        shared = 0
        for slot in self.slots:
            if slot is target or not slot.tokens:
                continue
            n = min(common_prefix(slot.tokens, tokens), len(tokens) - 1)
            if n > shared:
                best, shared = slot, n
        return best, shared

    def _restore_pays(self, file_size: int, tokens_saved: int) -> bool:
        restore = 0.005 + file_size / self._read_rate
        evaluate = tokens_saved / self.prompt_rate
        return restore < evaluate

    def _restore(self, slot: Slot, saved: SavedState, chat_key: str) -> bool:
        assert self.store is not None
        started = time.monotonic()
        try:
            with self.store.mapped(saved) as data:
                loaded = self._ctx.load_state(slot, data, saved.tokens)
        except DamagedState as exc:
            log.warning("refused the saved state of chat %s (%s); evaluating again", chat_key, exc)
            self.store.delete(chat_key)
            self._ctx.clear(slot)
            return False
        except OSError:
            log.exception("cannot read the saved state of chat %s", chat_key)
            self._ctx.clear(slot)
            return False
        if not loaded:
            log.warning("llama.cpp refused the saved state of chat %s; evaluating again", chat_key)
            self.store.delete(chat_key)
            return False
        seconds = time.monotonic() - started
        if seconds > 0:
            self._read_rate = 0.5 * self._read_rate + 0.5 * saved.file_size / seconds
        log.info("chat %s restored from disk: %d tokens in %.3f s", chat_key, len(saved.tokens),
                 seconds)
        return True

    def measured_prompt(self, n_tokens: int, seconds: float) -> None:
        """A decode evaluated `n_tokens` prompt tokens in `seconds` (for the restore decision)."""
        if n_tokens >= 32 and seconds > 0:
            self.prompt_rate = 0.7 * self.prompt_rate + 0.3 * n_tokens / seconds
