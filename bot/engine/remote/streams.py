"""What a backend's reply stream is made of, whichever kind of server writes it."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.engine.base import StopReason


@dataclass(frozen=True)
class Piece:
    """Reply text as the server sent it, with its token ids where the server gives them."""

    text: str
    tokens: tuple[int, ...] = ()
    thinking: bool = False
    """The model's thinking as the server sent it apart (OpenAI's `reasoning_content`)."""


@dataclass(frozen=True, kw_only=True)
class Done:
    """The end of a reply stream, with the server's own token counts."""

    reason: StopReason
    n_prompt_tokens: int
    n_evaluated: int
    """Prompt tokens the server evaluated (the rest came from its cache)."""
    n_generated: int


@dataclass(frozen=True, kw_only=True)
class ServerFacts:
    """What a server says about itself and its model (`/props`, `/v1/models`)."""

    model: str
    """The model's name as the server reports it (file path or alias)."""
    n_ctx: int
    """The context of one request (one slot)."""
    n_ctx_train: int
    slots: int
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    models: tuple[str, ...] = field(default_factory=tuple)
    """Every model the server offers (an OpenAI server may list several)."""
    can_save_slots: bool = False
