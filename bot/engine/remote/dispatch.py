"""The remote engine's `Runner`: a request the `RequestQueue` starts gets a slot on a server
(`Placement`) and its reply is written there, streamed back as text. When that server fails,
the request goes back to the queue and is written elsewhere: continued from the tokens already
streamed on a `llama-server`, started over (`Restarted`) on an OpenAI-compatible one.

A thinking model's reply is split here as the local engines split theirs (`bot.core.thinking`):
tags in the text, or an OpenAI server's `reasoning_content`. On a `llama-server` the bot renders
the prompt itself, so a thinking budget works as it does locally: when the thinking reaches it,
the stream is cut, the tokens that close the block are added to the reply, and the completion
goes on from there."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from bot.core.prompt import prompt_text
from bot.core.thinking import Part, ThinkingSplitter
from bot.engine.base import Finished, GenerationRequest, Restarted, TextDelta
from bot.engine.remote.backends import Backend, Backends
from bot.engine.remote.llamacpp import LlamaServer
from bot.engine.remote.openai import OpenAIServer, TokenEstimate, messages_of
from bot.engine.remote.placement import Claim
from bot.engine.remote.streams import Done, Piece
from bot.engine.requests import RequestQueue, Ticket, finished_now
from bot.errors import BackendDown, ModelError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Reply:
    """What a request's reply has so far, kept across servers."""

    task: asyncio.Task[None] | None = None
    tokens: list[int] = field(default_factory=list)
    """Token ids of the reply so far (from a `llama-server`), to continue it elsewhere."""
    evaluated: int = 0
    split: ThinkingSplitter | None = None
    """Its thinking told from its answer (None: a request that does not split)."""

    @classmethod
    def of(cls, request: GenerationRequest) -> _Reply:
        thinking = request.thinking
        if thinking is None:
            return cls()
        return cls(split=ThinkingSplitter(thinking.tags, opened=thinking.opened))

    @property
    def answered(self) -> int:
        """Tokens of the answer so far (every token where the reply does not split)."""
        return self.split.n_answer if self.split is not None else len(self.tokens)


class _BudgetSpent(Exception):
    """The reply's thinking reached its budget: the block is to be closed."""

class Dispatcher:
    """Writes the replies the request queue starts on the servers of `backends`."""

    def __init__(self, backends: Backends, estimate: TokenEstimate) -> None:
        self._backends = backends
        self._estimate = estimate
        self._replies: dict[Ticket, _Reply] = {}
        self.saved: dict[str, int] = {}
        """Chats whose slot cache a server saved to its disk: chat -> server index."""
        self.requests: RequestQueue | None = None
        """Set by the engine that composes both (the queue this dispatcher runs for)."""

    # -- the Runner ---------------------------------------------------------------------------

    def can_start(self, running: int) -> bool:
        return self._backends.placement.can_start()

    @property
    def stalled(self) -> bool:
        return not self._backends.placement.any_up()

    def start(self, ticket: Ticket) -> None:
        claim = self._backends.placement.take(ticket.chat_key, prefer=self.saved.get(ticket.chat_key))
        assert claim is not None, "started while no slot was free"
        reply = self._replies.get(ticket)
        if reply is None:
            reply = self._replies[ticket] = _Reply.of(ticket.request)
        reply.task = asyncio.create_task(self._run(ticket, reply, claim))

    def stop(self, ticket: Ticket) -> None:
        reply = self._replies.get(ticket)
        if reply is not None and reply.task is not None:
            reply.task.cancel()

    async def stop_all(self) -> None:
        """At closing: cancel every reply being written and wait until each has ended."""
        tasks = [reply.task for reply in self._replies.values() if reply.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one reply ------------------------------------------------------------------------------

    async def _run(self, ticket: Ticket, reply: _Reply, claim: Claim) -> None:
        assert self.requests is not None
        backend = self._backends.all[claim.backend]
        outcome: Finished | BaseException | None = None
        try:
            done = await self._write(ticket, reply, backend, claim)
            outcome = self._with_thinking(ticket, reply, finished_now(
                ticket, done.reason, n_prompt_tokens=done.n_prompt_tokens,
                n_evaluated=reply.evaluated, n_generated=done.n_generated))
        except asyncio.CancelledError:
            outcome = self._cancelled(ticket, reply)
        except BackendDown as exc:
            log.warning("reply to chat %s failed on %s: %s", ticket.chat_key, backend.spec.label, exc)
            await self._backends.down(backend, str(exc))
            if ticket.request.cancel.cancelled or self.requests.closed:
                outcome = self._cancelled(ticket, reply)
        except Exception as exc:
            log.warning("reply to chat %s refused by %s: %s", ticket.chat_key, backend.spec.label, exc)
            outcome = exc if isinstance(exc, ModelError) else ModelError(str(exc))
        finally:
            self._backends.placement.release(ticket.chat_key)
            reply.task = None
        if outcome is None:
            self.requests.requeue(ticket)  # written again on the next server with a slot free
        else:
            del self._replies[ticket]
            self.requests.end(ticket, outcome)

    def _cancelled(self, ticket: Ticket, reply: _Reply) -> Finished:
        return self._with_thinking(ticket, reply, finished_now(
            ticket, "cancelled", n_evaluated=reply.evaluated, n_generated=len(reply.tokens)))

    def _with_thinking(self, ticket: Ticket, reply: _Reply, finished: Finished) -> Finished:
        """The reply's end with what it thought (what was held back goes out first)."""
        split = reply.split
        if split is None:
            return finished
        self._deliver(ticket, split.finish())
        return dataclasses.replace(finished, text=ticket.text, thinking=split.thought,
                                   n_thinking=split.n_thinking)

    def _deliver(self, ticket: Ticket, parts: list[Part]) -> None:
        assert self.requests is not None
        for part in parts:
            self.requests.deliver(ticket, TextDelta(part.text, thinking=part.thinking))

    async def _write(self, ticket: Ticket, reply: _Reply, backend: Backend, claim: Claim) -> Done:
        """Stream the reply from one server; what was streamed before (on a server that
        failed) is continued or, where it cannot be, started over."""
        server = backend.server
        if isinstance(server, LlamaServer):
            return await self._complete(ticket, reply, backend, server, claim)
        return await self._chat(ticket, reply, backend, server)

    async def _complete(self, ticket: Ticket, reply: _Reply, backend: Backend,
                        server: LlamaServer, claim: Claim) -> Done:
        request = ticket.request
        facts = backend.facts
        assert facts is not None
        if claim.evicted is not None and await server.save_slot(claim.slot, claim.evicted):
            self.saved[claim.evicted] = backend.index
        if not claim.kept and self.saved.get(ticket.chat_key) == backend.index:
            restored = await server.restore_slot(claim.slot, ticket.chat_key)
            log.debug("chat %s: %d tokens restored into slot %d of %s", ticket.chat_key,
                      restored, claim.slot, backend.spec.label)
        prompt = await server.tokens.prompt(request.prompt)
        while True:
            tokens = prompt + reply.tokens
            left = request.sampling.n_predict - reply.answered
            room = facts.n_ctx - len(tokens)
            if room <= 0 or left <= 0:
                return Done(reason="context" if room <= 0 else "length",
                            n_prompt_tokens=len(prompt), n_evaluated=0,
                            n_generated=len(reply.tokens))
            wanted = left + self._thinking_room(request, reply, room)
            stream = server.complete(
                tokens, slot=claim.slot, sampling=request.sampling, n_predict=min(wanted, room),
                stop=request.stop,
            )
            try:
                done = await self._follow(ticket, reply, stream)
            except _BudgetSpent:
                await self._close_block(ticket, reply, server)
                continue
            # The server's "length" is the context's end where the room, not the reply's
            # length, bounded what it was asked for (counting pieces here would miss tokens
            # that came as one piece).
            reason = "context" if done.reason == "length" and room < wanted else done.reason
            return Done(reason=reason, n_prompt_tokens=len(prompt),
                        n_evaluated=done.n_evaluated, n_generated=len(reply.tokens))

    @staticmethod
    def _thinking_room(request: GenerationRequest, reply: _Reply, room: int) -> int:
        """Tokens a completion may take beyond the answer's: the thinking's budget left."""
        thinking = request.thinking
        if thinking is None or reply.split is None:
            return 0
        if thinking.budget < 0:
            return room
        return max(0, thinking.budget - reply.split.n_thinking)

    async def _close_block(self, ticket: Ticket, reply: _Reply, server: LlamaServer) -> None:
        """Feed the tokens that close the thinking block, as if the model wrote them."""
        thinking = ticket.request.thinking
        assert thinking is not None and reply.split is not None
        closing = await server.tokens.segment(thinking.tags.closing, True)
        reply.tokens.extend(closing)
        self._deliver(ticket, reply.split.feed(thinking.tags.closing, tokens=len(closing)))
        if reply.split.thinking:
            self._deliver(ticket, reply.split.end_block())

    async def _chat(self, ticket: Ticket, reply: _Reply, backend: Backend,
                    server: OpenAIServer) -> Done:
        assert self.requests is not None
        request = ticket.request
        facts = backend.facts
        assert facts is not None
        if ticket.text or (reply.split is not None and reply.split.thought):
            reply.tokens = []
            reply.split = _Reply.of(request).split
            self.requests.deliver(ticket, Restarted())
        estimate = self._estimate(request.prompt)
        messages = messages_of(request.system, request.turns) if request.turns else [
            {"role": "user", "content": prompt_text(request.prompt)}]
        room = max(1, facts.n_ctx - estimate)
        done = await self._follow(ticket, reply, server.chat(
            messages, sampling=request.sampling,
            n_predict=min(request.sampling.n_predict + self._thinking_room(request, reply, room),
                          room),
            prompt_estimate=0, quiet=request.thinking is not None and request.thinking.quiet,
        ), budget=False)
        if done.n_prompt_tokens:
            self._estimate.observe(request.prompt, done.n_prompt_tokens)
            return done
        return Done(reason=done.reason, n_prompt_tokens=estimate, n_evaluated=estimate,
                    n_generated=done.n_generated)

    async def _follow(self, ticket: Ticket, reply: _Reply,
                      stream: AsyncGenerator[Piece | Done, None], *, budget: bool = True) -> Done:
        """Pass a server's stream on as text (split into thinking and answer where the request
        asks); returns its end. Leaving closes the stream (and its connection) at once, which
        tells the server to stop: when the answer reaches -n, or (with `budget`) with
        `_BudgetSpent` when the thinking reaches its budget."""
        assert self.requests is not None
        request = ticket.request
        split = reply.split
        async with contextlib.aclosing(stream):
            async for item in stream:
                if isinstance(item, Done):
                    reply.evaluated += item.n_evaluated
                    return item
                reply.tokens.extend(item.tokens)
                if split is None:
                    if item.text:
                        self.requests.deliver(ticket, TextDelta(item.text))
                    continue
                count = max(1, len(item.tokens))
                self._deliver(ticket, split.thought_text(item.text, tokens=count) if item.thinking
                              else split.feed(item.text, tokens=count))
                if split.n_answer >= request.sampling.n_predict:
                    return Done(reason="length", n_prompt_tokens=0, n_evaluated=0,
                                n_generated=len(reply.tokens))
                if budget and request.thinking is not None and split.budget_spent(
                        request.thinking.budget):
                    raise _BudgetSpent
        raise BackendDown("the stream ended without its last event")

    # -- between replies ------------------------------------------------------------------------

    async def forget(self, chat_key: str) -> None:
        """Erase the chat's idle slot on its `llama-server` and stop restoring its saved cache
        (the server's slot files are the server's: nothing else is deleted)."""
        placement = self._backends.placement
        self.saved.pop(chat_key, None)
        # Held busy while it is erased, so no other chat is given (or saves) it meanwhile.
        claim = placement.take(chat_key) if placement.home(chat_key) else None
        if claim is None:
            return  # no slot, or a reply of the chat is being written on it
        try:
            server = self._backends.all[claim.backend].server
            if isinstance(server, LlamaServer):
                await server.erase_slot(claim.slot)
        finally:
            placement.give_up(chat_key)
            if self.requests is not None:
                self.requests.dispatch()

