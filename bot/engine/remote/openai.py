"""An OpenAI-compatible server as a backend (vLLM, Ollama, LocalAI, llama-server's `/v1`):
`/v1/chat/completions` with `stream: true`. The server applies its own chat template, so
it gets the conversation as messages; of our knobs only those the OpenAI API has are sent."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from bot.core.guard import TextGuard
from bot.core.prompt import Prompt, Turn
from bot.engine.base import SamplingParams, StopReason
from bot.engine.remote.http import ServerConnection
from bot.engine.remote.spec import BackendSpec
from bot.engine.remote.streams import Done, Piece, ServerFacts
from bot.errors import BackendError, ConfigError

OPENAI_KNOBS = frozenset({"temp", "top_p", "n_predict", "n_ctx", "reasoning"})
"""The knobs an OpenAI-compatible server is given (`temperature`, `top_p`, `max_tokens`; the
window is ours; /reasoning off as `chat_template_kwargs`); the others (`top_k`, `min_p`,
`repeat_penalty`, `repeat_last_n`, and the thinking's budget, which only a prompt rendered here
can enforce) are not in the OpenAI API and are left out."""

FINISH_REASONS: dict[str, StopReason] = {"stop": "eos", "length": "length"}
DEFAULT_STREAMS = 4

BYTES_PER_TOKEN = 3.0
"""The estimate of a prompt's tokens before the server has told its real count: one token per
3 bytes of UTF-8 is more than most tokenizers give (English runs about 4 bytes a token, Chinese
3 to 4.5), so the window errs on the short side."""
MARGIN = 1.1
"""Room kept on top of the calibrated estimate."""


class TokenEstimate:
    """A prompt's tokens estimated from its bytes, calibrated by the `usage` servers report:
    the estimate is scaled by the largest ratio of real to estimated tokens seen so far (never
    below 1, so it never undercounts more than the uncalibrated rule), plus `MARGIN`."""

    def __init__(self) -> None:
        self.ratio = 1.0

    @staticmethod
    def raw(prompt: Prompt) -> int:
        return math.ceil(sum(len(s.text.encode("utf-8")) for s in prompt) / BYTES_PER_TOKEN)

    def __call__(self, prompt: Prompt) -> int:
        return math.ceil(self.raw(prompt) * self.ratio * MARGIN) + 8

    def observe(self, prompt: Prompt, real_tokens: int) -> None:
        estimated = self.raw(prompt)
        if estimated > 0 and real_tokens > 0:
            self.ratio = min(4.0, max(self.ratio, real_tokens / estimated))


GUARD = TextGuard()
"""Servers such as llama-server parse control tokens in message content, and apply a template
we do not see: every family's markup is broken in every text sent (`bot.core.guard`)."""


def messages_of(system: str | None, turns: Sequence[Turn]) -> list[dict[str, str]]:
    """The conversation as OpenAI messages (the server's template renders them), every text
    guarded: the system prompt (a chat's /system and summary are users' words too) and turns."""
    guarded_system, guarded = GUARD.conversation(system, turns)
    messages = [{"role": "system", "content": guarded_system}] if guarded_system else []
    messages += [{"role": turn.role, "content": turn.text} for turn in guarded]
    return messages


def context_of(entry: dict[str, Any]) -> int | None:
    """A model's context size as servers list it: llama-server `meta.n_ctx`, vLLM
    `max_model_len`, others `context_length` / `context_window`."""
    meta = entry.get("meta") or {}
    for value in (meta.get("n_ctx"), entry.get("max_model_len"), entry.get("context_length"),
                  entry.get("context_window")):
        if isinstance(value, int) and value > 0:
            return value
    return None


class OpenAIServer:
    """The calls the remote engine makes to one OpenAI-compatible server."""

    kind = "openai"

    def __init__(self, connection: ServerConnection, spec: BackendSpec) -> None:
        self.connection = connection
        self._spec = spec
        self.model = spec.model

    async def health(self) -> None:
        await self.connection.get("/v1/models", wait=5.0)

    async def facts(self) -> ServerFacts:
        listed = await self.connection.get("/v1/models", wait=10.0)
        entries = [e for e in listed.get("data") or [] if isinstance(e, dict)]
        names = tuple(str(e.get("id")) for e in entries if e.get("id"))
        if self._spec.model is None and not names:
            raise BackendError(f"{self._spec.label} lists no models: set `model` for this backend")
        self.model = self._spec.model or names[0]
        chosen = next((e for e in entries if e.get("id") == self.model), {})
        n_ctx = self._spec.n_ctx or context_of(chosen)
        if n_ctx is None:
            raise ConfigError(
                f"{self._spec.label} does not say the context size of {self.model}: set `n_ctx` "
                "for this backend"
            )
        meta = chosen.get("meta") or {}
        return ServerFacts(
            model=self.model, n_ctx=n_ctx, n_ctx_train=int(meta.get("n_ctx_train") or n_ctx),
            slots=self._spec.slots or DEFAULT_STREAMS, models=names or (self.model,),
        )

    async def chat(
        self, messages: list[dict[str, str]], *, sampling: SamplingParams, n_predict: int,
        prompt_estimate: int, quiet: bool = False,
    ) -> AsyncGenerator[Piece | Done, None]:
        """Stream a reply; a thinking model's `reasoning_content` (llama-server, vLLM, ...)
        comes as thinking pieces. `quiet`: the chat asked the model not to think (servers that
        apply a template with `enable_thinking` honour `chat_template_kwargs`)."""
        body: dict[str, Any] = {
            "model": self.model, "messages": messages, "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": n_predict,
            "temperature": sampling.temp, "top_p": sampling.top_p,
        }
        if quiet:
            body["chat_template_kwargs"] = {"enable_thinking": False}
        if sampling.seed >= 0:
            body["seed"] = sampling.seed
        reason: StopReason = "eos"
        generated = 0
        usage: dict[str, Any] = {}
        async for chunk in self.connection.stream("/v1/chat/completions", body):
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                thought = delta.get("reasoning_content") or delta.get("reasoning") or ""
                if thought:
                    generated += 1
                    yield Piece(str(thought), thinking=True)
                text = delta.get("content") or ""
                if text:
                    generated += 1
                    yield Piece(str(text))
                if choice.get("finish_reason"):
                    reason = FINISH_REASONS.get(str(choice["finish_reason"]), "eos")
            if chunk.get("usage"):
                usage = chunk["usage"]
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
        yield Done(
            reason=reason, n_prompt_tokens=prompt_tokens or prompt_estimate,
            n_evaluated=max(0, prompt_tokens - cached) if prompt_tokens else prompt_estimate,
            n_generated=int(usage.get("completion_tokens") or generated),
        )
