"""llama.cpp's `llama-server` as a backend: our own chat formats rendered to token ids, each
chat on a slot of its own (`id_slot`, `cache_prompt`), slot caches saved to and restored from
the server's `--slot-save-path` when a chat gives its slot up.

User and model text go to the server as token ids from its `/tokenize` with
`parse_special: false`, so a user who types `<|im_end|>` cannot end a turn: a string prompt
would be tokenized with special tokens parsed."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from pathlib import PurePath
from typing import Any

from bot.core.prompt import Prompt
from bot.engine.base import SamplingParams, StopReason
from bot.engine.remote.http import ServerConnection
from bot.engine.remote.streams import Done, Piece, ServerFacts
from bot.errors import BackendDown, BackendError

log = logging.getLogger(__name__)

STOP_TYPES: dict[str, StopReason] = {"eos": "eos", "word": "stop", "limit": "length"}
PING_SECONDS = 5
"""How often a silent stream (a long prompt being evaluated) sends a comment: the client's read
timeout then tells a dead server from a slow one."""


class SegmentTokens:
    """Token ids of prompt segments from the server's tokenizer, the latest `size` remembered:
    a follow-up in a long chat tokenizes only its new text."""

    def __init__(self, connection: ServerConnection, *, size: int = 4096) -> None:
        self._connection = connection
        self._size = size
        self._known: OrderedDict[tuple[str, bool], tuple[int, ...]] = OrderedDict()
        self.add_bos = False
        self.bos: int | None = None

    async def learn_bos(self) -> None:
        """Whether the model wants a BOS first, and its id (`add_special` on no text)."""
        answer = await self._connection.post("/tokenize", {"content": "", "add_special": True})
        tokens = [int(t) for t in answer.get("tokens", [])]
        self.add_bos = bool(tokens)
        self.bos = tokens[0] if tokens else None

    async def segment(self, text: str, special: bool) -> tuple[int, ...]:
        key = (text, special)
        tokens = self._known.get(key)
        if tokens is not None:
            self._known.move_to_end(key)
            return tokens
        answer = await self._connection.post(
            "/tokenize", {"content": text, "add_special": False, "parse_special": special}
        )
        tokens = tuple(int(t) for t in answer.get("tokens", []))
        self._known[key] = tokens
        if len(self._known) > self._size:
            self._known.popitem(last=False)
        return tokens

    async def prompt(self, prompt: Prompt) -> list[int]:
        """The prompt's tokens segment by segment, as the local engines tokenize it."""
        pieces = await asyncio.gather(*(self.segment(s.text, s.special) for s in prompt if s.text))
        tokens: list[int] = []
        if self.add_bos and self.bos is not None:
            tokens.append(self.bos)
        for piece in pieces:
            tokens.extend(piece)
        if self.add_bos and len(tokens) > 1 and tokens[1] == self.bos:
            del tokens[0]  # the template wrote the BOS itself
        return tokens


def slot_file(chat_key: str) -> str:
    """The file name a chat's slot cache is saved under in the server's slot directory."""
    return "alpaca-bot-" + re.sub(r"[^A-Za-z0-9_-]", "_", chat_key) + ".bin"


class LlamaServer:
    """The calls the remote engine makes to one `llama-server`."""

    kind = "llama.cpp"

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        self.tokens = SegmentTokens(connection)
        self.can_save_slots: bool | None = None
        """Unknown until tried: a server started without --slot-save-path refuses."""

    async def health(self) -> None:
        await self.connection.get("/health", wait=5.0)

    async def facts(self) -> ServerFacts:
        props = await self.connection.get("/props", wait=10.0)
        settings = props.get("default_generation_settings", {})
        n_ctx = int(settings.get("n_ctx") or 0)
        n_ctx_train = n_ctx
        try:
            listed = await self.connection.get("/v1/models", wait=10.0)
            meta = (listed.get("data") or [{}])[0].get("meta") or {}
            n_ctx_train = int(meta.get("n_ctx_train") or n_ctx)
        except BackendDown:
            raise
        except BackendError:
            pass
        await self.tokens.learn_bos()
        model = str(props.get("model_path") or props.get("model_alias") or "llama-server")
        return ServerFacts(
            model=model, n_ctx=n_ctx, n_ctx_train=max(n_ctx_train, n_ctx),
            slots=int(props.get("total_slots") or 1),
            chat_template=props.get("chat_template") or None,
            bos_token=str(props.get("bos_token") or ""), eos_token=str(props.get("eos_token") or ""),
            models=(PurePath(model).name,),
        )

    async def complete(
        self, tokens: Sequence[int], *, slot: int, sampling: SamplingParams, n_predict: int,
        stop: Sequence[str],
    ) -> AsyncGenerator[Piece | Done, None]:
        """Stream a completion of `tokens` on `slot`, reusing what the slot already holds."""
        body: dict[str, Any] = {
            "prompt": list(tokens), "id_slot": slot, "cache_prompt": True, "stream": True,
            "n_predict": n_predict, "stop": list(stop), "return_tokens": True,
            "sse_ping_interval": PING_SECONDS,
            "temperature": sampling.temp, "top_k": sampling.top_k, "top_p": sampling.top_p,
            "min_p": sampling.min_p, "repeat_penalty": sampling.repeat_penalty,
            "repeat_last_n": sampling.repeat_last_n, "seed": sampling.seed,
        }
        async for chunk in self.connection.stream("/completion", body):
            text = str(chunk.get("content") or "")
            ids = tuple(int(t) for t in chunk.get("tokens") or ())
            if text or ids:
                yield Piece(text, ids)
            if chunk.get("stop"):
                timings = chunk.get("timings") or {}
                evaluated = int(timings.get("prompt_n", chunk.get("tokens_evaluated", 0)) or 0)
                reason = STOP_TYPES.get(str(chunk.get("stop_type")), "eos")
                if chunk.get("truncated"):
                    reason = "context"
                yield Done(
                    reason=reason, n_prompt_tokens=len(tokens), n_evaluated=evaluated,
                    n_generated=int(timings.get("predicted_n", 0) or 0),
                )
                return

    async def save_slot(self, slot: int, chat_key: str) -> bool:
        """Save the slot's cache to the server's disk; False when the server cannot."""
        if self.can_save_slots is False:
            return False
        try:
            await self.connection.post(
                f"/slots/{slot}?action=save", {"filename": slot_file(chat_key)}, wait=120.0
            )
        except BackendDown:
            raise
        except BackendError as exc:
            log.info("%s cannot save slots (%s): chats that give their slot up are evaluated "
                     "again when they come back", self.connection.base_url, exc)
            self.can_save_slots = False
            return False
        self.can_save_slots = True
        return True

    async def erase_slot(self, slot: int) -> None:
        """Empty the slot's cache on the server (its saved files stay the server's)."""
        await self.connection.post(f"/slots/{slot}?action=erase", {}, wait=30.0)

    async def restore_slot(self, slot: int, chat_key: str) -> int:
        """Load a chat's saved cache into `slot`; the tokens restored (0: nothing saved)."""
        try:
            answer = await self.connection.post(
                f"/slots/{slot}?action=restore", {"filename": slot_file(chat_key)}, wait=120.0
            )
        except BackendDown:
            raise
        except BackendError:
            return 0  # nothing saved for this chat (or the file is gone)
        return int(answer.get("n_restored") or 0)
