"""How the operator describes one inference server: `backends = [...]` in the config file, or
`ALPACA_BOT_BACKENDS` as a JSON list of the same objects."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

BackendKind = Literal["llama.cpp", "openai"]


class BackendSpec(BaseModel):
    """One server: llama.cpp's `llama-server` (`/completion`, our own chat formats, slots with
    their KV caches) or anything speaking the OpenAI chat API (`/v1/chat/completions`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    kind: BackendKind = "llama.cpp"
    api_key: SecretStr | None = None
    model: str | None = None
    """The model name sent to an `openai` server (default: the first it lists)."""
    weight: float = Field(default=1.0, gt=0)
    """How much of the load this server takes relative to the others (a GPU box: more)."""
    slots: int | None = Field(default=None, ge=1, le=256)
    """Replies written at once: read from `llama-server` (`/props`); for `openai` servers the
    number of streams the bot opens at once (default 4)."""
    n_ctx: int | None = Field(default=None, ge=128)
    """The context size of one request when the server does not say it (`openai` kind)."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"backend url must start with http:// or https:// (got {value!r})")
        if value.endswith("/v1"):
            value = value[: -len("/v1")]
        return value

    @property
    def label(self) -> str:
        """How logs and admins name this server: its URL with any password written into it
        (`user:password@`) masked; the URL itself is only ever given to the HTTP client."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        where = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=where))
