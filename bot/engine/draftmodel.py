"""A small draft model with the pool model's vocabulary: it guesses each generating chat's next
tokens greedily, in a context of its own with one sequence per slot of the pool. A sequence is
brought in step with its chat at each guess: what it holds beyond the chat's tokens (guesses
the model did not write, another chat's tokens) is dropped and what it lacks is evaluated."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bot.engine.drafting import ChatDraft
from bot.engine.draftplan import MODEL_GUESS
from bot.engine.ngram import Guess
from bot.engine.slots import BatchRow, Slot, SlotContext, common_prefix
from bot.errors import ModelError
from bot.i18n import _
from bot.llama.loading import check_model_file

log = logging.getLogger(__name__)


class DraftModel:
    """A draft model loaded for one pool (worker thread only); a `DraftSource`."""

    free = False
    """Guessing costs passes of the draft model (an n-gram lookup costs nothing)."""

    def __init__(self, path: Path, *, target: SlotContext, threads: int) -> None:
        check_model_file(path)
        self.name = path.name
        self._ctx = SlotContext(path, n_slots=target.n_slots, n_ctx=target.n_ctx,
                                threads=threads, batch=target.batch_size, kv_type="f16")
        if not same_vocabulary(self._ctx.vocab, target.vocab):
            self._ctx.close()
            raise ModelError(_(
                "the draft model {path} has another vocabulary than the model: a draft model "
                "must come from the same family (the same tokenizer)", path=path,
            ))
        self._sequences = [Slot(seq_id) for seq_id in range(target.n_slots)]

    def warm_up(self) -> None:
        self._ctx.warm_up()

    def close(self) -> None:
        self._ctx.close()

    def guess(self, chats: Sequence[tuple[ChatDraft, int]]) -> list[list[Guess]]:
        """Up to n greedy guesses for each (chat, n), all chats' guesses made together: one
        decode per guess after the sequences are brought in step."""
        guesses: list[list[Guess]] = [[] for _ in chats]
        wanted = [i for i, (chat, most) in enumerate(chats)
                  if most > 0 and len(chat.tokens) + most <= self._ctx.n_ctx]
        wanted.sort(key=lambda i: chats[i][0].seq_id)  # one pass: see SlotContext.decode
        going = self._catch_up([chats[i][0] for i in wanted])
        guessed = {i: [token] for i, token in zip(wanted, going, strict=True)}
        for step in range(1, max((chats[i][1] for i in wanted), default=0)):
            more = [i for i in wanted if chats[i][1] > step]
            if not more:
                break
            rows: list[BatchRow] = []
            for i in more:
                sequence = self._sequences[chats[i][0].seq_id]
                rows.append((sequence.seq_id, len(sequence.tokens), [guessed[i][-1]], 1))
                sequence.tokens.append(guessed[i][-1])
            self._ctx.decode(rows)
            for row, i in enumerate(more):
                guessed[i].append(self._most_likely(row))
        for i, tokens in guessed.items():
            guesses[i] = [(token, MODEL_GUESS) for token in tokens[: chats[i][1]]]
        return guesses

    def _catch_up(self, chats: Sequence[ChatDraft]) -> list[int]:
        """Bring each chat's sequence in step with its tokens; its first guess for each."""
        batch = self._ctx.batch_size
        left: dict[int, list[int]] = {}
        for k, chat in enumerate(chats):
            sequence = self._sequences[chat.seq_id]
            keep = min(common_prefix(sequence.tokens, chat.tokens), len(chat.tokens) - 1)
            if keep < len(sequence.tokens):
                if not sequence.tokens or keep == 0:
                    self._ctx.clear(sequence)
                else:
                    self._ctx.truncate(sequence, keep)
            left[k] = chat.tokens[keep:]
        first = [0] * len(chats)
        while left:
            rows: list[BatchRow] = []
            done: list[tuple[int, int]] = []
            room, n_rows = batch, 0
            for k in list(left):
                if room <= 0:
                    break
                part, left[k] = left[k][:room], left[k][room:]
                sequence = self._sequences[chats[k].seq_id]
                last = not left[k]
                rows.append((sequence.seq_id, len(sequence.tokens), part, int(last)))
                sequence.tokens.extend(part)
                room -= len(part)
                n_rows += len(part)
                if last:
                    done.append((k, n_rows - 1))
                    del left[k]
            self._ctx.decode(rows)
            for k, row in done:
                first[k] = self._most_likely(row)
        return first

    def _most_likely(self, row: int) -> int:
        return int(np.argmax(self._ctx.logits(row)))


def same_vocabulary(one: Any, other: Any) -> bool:
    """Whether two llama.cpp vocabularies have the same tokens under the same ids."""
    import llama_cpp

    size = int(llama_cpp.llama_vocab_n_tokens(one))
    if size != int(llama_cpp.llama_vocab_n_tokens(other)):
        return False
    text = llama_cpp.llama_vocab_get_text
    return all(text(one, token) == text(other, token) for token in range(size))
