"""The pool's decode loop (continuous batching): a step evaluates the next token of each
generating chat plus a chunk of the prompts being read, or, when the prompts' rest fits in one
chunk, those prompts alone; then it samples where due.

With drafting on (speculative decoding, `bot.engine.drafting`), a generating chat's next token
comes with the tokens drafted after it, all with their logits; sampling then goes on past the
first token while the drafts are what the model writes (`bot.engine.verify`), and the drafts it
did not write leave the slot's cache before anyone sees them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from bot.engine.base import GenerationRequest, StopReason
from bot.engine.cache import MIN_SHARED_PREFIX, SlotCache
from bot.engine.drafting import ChatDraft, Drafting
from bot.engine.intake import Intake
from bot.engine.reply import ReplyStream, closing_tokens
from bot.engine.requests import Outcome, Ticket, finished_now
from bot.engine.sampler import Sampler
from bot.engine.slots import BatchRow, Slot, SlotContext, SlotState, common_prefix
from bot.engine.tokens import SampledPieces
from bot.engine.verify import verify_drafts
from bot.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class PoolJob:
    """A request the request queue started, with its decoding state."""

    ticket: Ticket
    tokens: list[int] = field(default_factory=list)
    slot: Slot | None = None
    sampler: Sampler | None = None
    reply: ReplyStream | None = None
    next_token: int = -1
    awaits: tuple[PoolJob, int] | None = None
    """(a prompt started before this one, n): its first n tokens are this prompt's too, and
    they are copied from its slot once evaluated there instead of being evaluated twice."""
    draft: ChatDraft | None = None
    drafts: list[int] = field(default_factory=list)
    """Tokens drafted after `next_token`, checked in the step that evaluates it."""

    @property
    def request(self) -> GenerationRequest:
        return self.ticket.request

    @property
    def chat_key(self) -> str:
        return self.ticket.chat_key

    @property
    def prompt_left(self) -> int:
        assert self.slot is not None
        return len(self.tokens) - len(self.slot.tokens) if self.slot.state is SlotState.PROMPT else 0

    @property
    def seq_id(self) -> int:
        assert self.slot is not None
        return self.slot.seq_id


def sibling_prefix(job: PoolJob, active: Sequence[PoolJob]) -> tuple[PoolJob, int] | None:
    """A prompt still being evaluated that begins as `job`'s does, beyond what `job`'s slot
    holds: chats that start together (after a restart, a busy moment) share the system
    prompt, and it is evaluated once, not once per chat."""
    assert job.slot is not None
    best: tuple[PoolJob, int] | None = None
    needed = len(job.slot.tokens) + MIN_SHARED_PREFIX
    for other in active:
        if other.awaits is not None or other.slot is None or other.prompt_left <= 0:
            continue
        shared = min(common_prefix(other.tokens, job.tokens), len(job.tokens) - 1)
        if shared >= needed and shared > len(other.slot.tokens) and (
                best is None or shared > best[1]):
            best = (other, shared)
    return best


class BatchDecoder:
    """Runs admitted jobs to their end on the slots of one context (worker thread only)."""

    def __init__(
        self, ctx: SlotContext, cache: SlotCache, intake: Intake, *, batch: int,
        prefill_chunk: int, drafting: Drafting | None = None,
    ) -> None:
        self._ctx = ctx
        self._drafting = drafting
        self._cache = cache
        self._intake = intake
        self._batch = batch
        self._prefill_chunk = prefill_chunk
        self.active: list[PoolJob] = []
        self.on_logits: Callable[[str, NDArray[np.float32]], None] | None = None
        self.on_step: Callable[[list[tuple[str, int]]], None] | None = None
        self._pieces = SampledPieces(ctx.vocab)

    def start(self, job: PoolJob, tokens: list[int]) -> None:
        """Give the job a slot, reuse what is cached, and make it part of the next steps."""
        request = job.request
        job.tokens = tokens
        if request.cancel.cancelled:
            self.end(job, finished_now(job.ticket, "cancelled", text="",
                                         n_prompt_tokens=len(tokens)))
            return
        room = self._ctx.n_ctx - len(tokens)
        if room <= 0:
            self.end(job, ModelError(
                f"the prompt has {len(tokens)} tokens, more than the context of {self._ctx.n_ctx}"
            ))
            return
        slot = self._cache.slot_for(job.chat_key)
        job.slot = slot
        synced = self._cache.reuse(slot, job.chat_key, tokens)
        slot.chat_key = job.chat_key
        slot.state = SlotState.PROMPT
        slot.last_used = time.monotonic()
        job.reply = ReplyStream(self._intake, job.ticket, n_prompt=len(tokens),
                                n_evaluated=len(tokens) - len(slot.tokens), room=room,
                                closing=closing_tokens(self._ctx.vocab, request))
        job.sampler = Sampler(request.sampling, n_vocab=self._ctx.n_vocab, seed=job.reply.seed)
        if self._drafting is not None:
            job.draft = self._drafting.chat(tokens, slot.seq_id)
        if synced:
            job.awaits = sibling_prefix(job, self.active)
        self.active.append(job)
        if not synced:
            # llama.cpp applies stream copies and position shifts at the next decode; make it
            # happen now, before another slot is written or this one saved.
            self._decode({job: 1})

    def _prefix_ready(self, job: PoolJob) -> bool:
        """Whether `job` may evaluate its prompt: what it awaits is copied into its slot (or
        will never come: the other prompt was cancelled or failed)."""
        assert job.awaits is not None and job.slot is not None and job.reply is not None
        donor, shared = job.awaits
        source = donor.slot
        if (donor in self.active and source is not None and source.state is SlotState.PROMPT
                and len(source.tokens) < shared):
            return False
        job.awaits = None
        if (source is not None and source is not job.slot and len(source.tokens) >= shared
                and source.tokens[:shared] == job.tokens[:shared]):
            # Applied by llama.cpp at the start of the next decode, before the batch is written.
            self._ctx.copy_prefix(source, job.slot, shared)
            job.reply.n_evaluated = len(job.tokens) - shared
            log.debug("chat %s: copied %d prompt tokens from chat %s", job.chat_key, shared,
                      donor.chat_key)
        return True

    def step(self) -> None:
        for job in [job for job in self.active if job.request.cancel.cancelled]:
            self._finish(job, "cancelled")
        if not self.active:
            return
        plan: dict[PoolJob, int] = {}
        prompts = []
        generating = []
        for job in self.active:
            assert job.slot is not None
            if job.slot.state is SlotState.GENERATING:
                plan[job] = 1
                generating.append(job)
            elif job.prompt_left > 0 and (job.awaits is None or self._prefix_ready(job)):
                prompts.append(job)
        if plan and self._finish_short_prompts(prompts):
            return
        # While others generate, a prompt advances by chunks so their streams keep flowing;
        # alone, it takes whole batches.
        budget = self._prefill_chunk if plan else self._batch
        budget = min(budget, self._batch - len(plan))
        for job in prompts:
            if budget <= 0:
                break
            n = min(job.prompt_left, budget)
            plan[job] = n
            budget -= n
        self._draft(generating, plan)
        if plan:
            self._decode(plan)

    def _draft(self, generating: list[PoolJob], plan: dict[PoolJob, int]) -> None:
        """Add the drafts of the generating chats to the step's plan."""
        if self._drafting is None or not generating:
            return
        chats = []
        for job in generating:
            assert job.draft is not None and job.slot is not None and job.reply is not None
            # Not past the context's end; none while the reply feeds tokens it must (a forced
            # token is never a draft).
            room = self._ctx.n_ctx - 1 - len(job.slot.tokens)
            chats.append((job.draft, 0 if job.reply.forcing else room))
        others = [(n, len(job.slot.tokens)) for job, n in plan.items()
                  if job.slot and job.slot.state is SlotState.PROMPT]
        drafts = self._drafting.propose(chats, others, self._batch - sum(plan.values()))
        for job, tokens in zip(generating, drafts, strict=True):
            job.drafts = tokens
            plan[job] += len(tokens)

    def _finish_short_prompts(self, prompts: list[PoolJob]) -> bool:
        """Evaluate the prompts whose rest fits in one chunk in a step of their own, without
        the generating chats' next tokens; False if there is none.

        With one KV stream per slot, llama.cpp splits a batch into parts holding as many tokens
        of each sequence, so one token for each generating chat beside a prompt costs a pass
        over the weights of its own. Without them the prompt costs one pass, and the others
        lose nothing: their next token comes after that step and one more, as it would after
        the mixed step, and then the new chat decodes beside them."""
        plan: dict[PoolJob, int] = {}
        budget = self._batch
        for job in prompts:
            n = job.prompt_left
            if n <= self._prefill_chunk and n <= budget:
                plan[job] = n
                budget -= n
        if not plan:
            return False
        self._decode(plan)
        return True

    def _decode(self, counts: dict[PoolJob, int]) -> None:
        """Evaluate `counts[job]` tokens of each job in one batch, then sample where due."""
        jobs = sorted(counts, key=lambda job: job.seq_id)  # see SlotContext.decode: one pass
        rows: list[BatchRow] = []
        sample_rows: list[tuple[PoolJob, int]] = []
        fed: list[tuple[PoolJob, Sequence[int]]] = []
        starts: list[int] = []
        n_prompt = 0
        n_rows = 0
        for job in jobs:
            slot = job.slot
            assert slot is not None
            start = len(slot.tokens)
            tokens: Sequence[int]
            if slot.state is SlotState.GENERATING:
                tokens = (job.next_token, *job.drafts)
                outputs = len(tokens)
            else:
                tokens = job.tokens[start : start + counts[job]]
                n_prompt += len(tokens)
                outputs = int(start + len(tokens) == len(job.tokens))
            n_rows += len(tokens)
            if outputs:
                sample_rows.append((job, n_rows - outputs))
            rows.append((slot.seq_id, start, tokens, outputs))
            fed.append((job, tokens))
            starts.append(start)
        if self.on_step is not None:
            self.on_step([(job.chat_key, len(tokens)) for job, tokens in fed])
        started = time.monotonic()
        try:
            self._ctx.decode(rows)
        except ModelError as exc:
            log.error("decode failed for chats %s: %s", [job.chat_key for job in jobs], exc)
            for job in jobs:
                assert job.slot is not None
                self._ctx.clear(job.slot)
                job.slot.reset()
                self.end(job, exc)
            return
        seconds = time.monotonic() - started
        self._cache.measured_prompt(n_prompt, seconds)
        if self._drafting is not None and not n_prompt:
            # The cost of the generating chats' steps, the ones drafting changes (a prompt's
            # chunk is a wide row of another cost per token).
            self._drafting.observe([(len(tokens), start) for (_, tokens), start
                                    in zip(fed, starts, strict=True)], seconds)
        for job, tokens in fed:
            assert job.slot is not None
            job.slot.tokens.extend(tokens)
        for job, row in sample_rows:
            self._sample(job, row)

    def _sample(self, job: PoolJob, row: int) -> None:
        """Sample from batch row `row` on, through the job's drafts (if it has any)."""
        slot, reply = job.slot, job.reply
        assert slot is not None and reply is not None
        slot.state = SlotState.GENERATING
        drafts, job.drafts = job.drafts, []
        verdict = verify_drafts(drafts, lambda i: self._choose(job, row + i),
                                lambda token: reply.feed(self._pieces(token)))
        if drafts:
            # The cache keeps what it would hold without drafts: the row's tokens up to the
            # last one whose next token was chosen.
            self._ctx.truncate(slot, len(slot.tokens) - 1 - len(drafts) + verdict.kept)
        if job.draft is not None and self._drafting is not None:
            self._drafting.settle(job.draft, verdict)
        if verdict.reason is not None:
            self._finish(job, verdict.reason)
        else:
            job.next_token = verdict.sampled[-1]

    def _choose(self, job: PoolJob, row: int) -> int | None:
        """The token after batch row `row`: one the reply must take, else sampled from the
        row's logits with the reply's sampler chain; None once the request is cancelled."""
        sampler, reply = job.sampler, job.reply
        assert sampler is not None and reply is not None
        if job.request.cancel.cancelled:
            return None
        if self.on_logits is not None:
            self.on_logits(job.chat_key, self._ctx.logits(row))
        token = reply.forced_token()  # a thinking block's closing, when its budget ran out
        if token is None:
            token = sampler.sample(self._ctx.ctx, row)
        return token

    def finish_all(self) -> None:
        for job in list(self.active):
            self._finish(job, "cancelled")

    def _finish(self, job: PoolJob, reason: StopReason) -> None:
        assert job.reply is not None
        self.end(job, job.reply.close(reason))

    def end(self, job: PoolJob, outcome: Outcome) -> None:
        """The job's one end: its slot and sampler are released before the outcome goes out,
        so whoever sees it sees the queue without this job."""
        if job.sampler is not None:
            job.sampler.close()
            job.sampler = None
        slot = job.slot
        if slot is not None and slot.busy:
            slot.state = SlotState.IDLE if slot.tokens else SlotState.EMPTY
            if slot.state is SlotState.EMPTY:
                slot.reset()
            slot.last_used = time.monotonic()
        if job in self.active:
            self.active.remove(job)
        self._intake.end(job.ticket, outcome)
