"""The remote engine's `Runner`: a request the `RequestQueue` starts gets a slot on a server
(`Placement`) and its reply is written there, streamed back as text. When that server fails,
the request goes back to the queue and is written elsewhere: continued from the tokens already
streamed on a `llama-server`, started over (`Restarted`) on an OpenAI-compatible one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from bot.core.prompt import prompt_text
from bot.engine.base import Finished, Restarted, TextDelta
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
        reply = self._replies.setdefault(ticket, _Reply())
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
            outcome = finished_now(ticket, done.reason, n_prompt_tokens=done.n_prompt_tokens,
                                   n_evaluated=reply.evaluated, n_generated=done.n_generated)
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
        return finished_now(ticket, "cancelled", n_evaluated=reply.evaluated,
                            n_generated=len(reply.tokens))

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
        tokens = prompt + reply.tokens
        left = request.sampling.n_predict - len(reply.tokens)
        room = facts.n_ctx - len(tokens)
        if room <= 0 or left <= 0:
            return Done(reason="context" if room <= 0 else "length",
                        n_prompt_tokens=len(prompt), n_evaluated=0, n_generated=len(reply.tokens))
        stream = server.complete(
            tokens, slot=claim.slot, sampling=request.sampling, n_predict=min(left, room),
            stop=request.stop,
        )
        done = await self._follow(ticket, reply, stream)
        reason = "context" if done.reason == "length" and room < left else done.reason
        return Done(reason=reason, n_prompt_tokens=len(prompt),
                    n_evaluated=done.n_evaluated, n_generated=len(reply.tokens))

    async def _chat(self, ticket: Ticket, reply: _Reply, backend: Backend,
                    server: OpenAIServer) -> Done:
        assert self.requests is not None
        request = ticket.request
        facts = backend.facts
        assert facts is not None
        if ticket.text:
            reply.tokens = []
            self.requests.deliver(ticket, Restarted())
        estimate = self._estimate(request.prompt)
        messages = messages_of(request.system, request.turns) if request.turns else [
            {"role": "user", "content": prompt_text(request.prompt)}]
        done = await self._follow(ticket, reply, server.chat(
            messages, sampling=request.sampling,
            n_predict=min(request.sampling.n_predict, max(1, facts.n_ctx - estimate)),
            prompt_estimate=0,
        ))
        if done.n_prompt_tokens:
            self._estimate.observe(request.prompt, done.n_prompt_tokens)
            return done
        return Done(reason=done.reason, n_prompt_tokens=estimate, n_evaluated=estimate,
                    n_generated=done.n_generated)

    async def _follow(self, ticket: Ticket, reply: _Reply,
                      stream: AsyncGenerator[Piece | Done, None]) -> Done:
        """Pass a server's stream on as text; returns its end. Leaving closes the stream (and
        its connection) at once, which tells the server to stop."""
        assert self.requests is not None
        async with contextlib.aclosing(stream):
            async for item in stream:
                if isinstance(item, Done):
                    reply.evaluated += item.n_evaluated
                    return item
                reply.tokens.extend(item.tokens)
                if item.text:
                    self.requests.deliver(ticket, TextDelta(item.text))
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

