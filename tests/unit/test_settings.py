"""Settings: TOML file, ALPACA_BOT_* environment overrides, derived values, config errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from bot.core.params import GenerationParams
from bot.errors import ConfigError
from bot.settings import TELEGRAM_API_URL, load_settings

TOKEN = "123456:AAF-secret-token-from-botfather"


@pytest.fixture(autouse=True)
def no_alpaca_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every ALPACA_BOT_* variable, not only the common ones, is unset; data goes to tmp."""
    for key in list(os.environ):
        if key.upper().startswith("ALPACA_BOT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def write_config(tmp_path: Path, text: str, name: str = "alpaca-bot.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.token is None
    assert settings.api_url == TELEGRAM_API_URL
    assert settings.admins == []
    assert settings.data == tmp_path / "xdg" / "alpaca-bot"
    assert settings.config is None
    assert settings.template == "auto"
    assert settings.generation_defaults() == GenerationParams()


def test_values_from_the_toml_file(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f"""
token = "{TOKEN}"
api_url = "http://127.0.0.1:8081/bot"
admins = [11, 22]
data = "{tmp_path / 'data'}"
model = "/models/chinese-alpaca-7b-q4_0.gguf"
template = "alpaca"
max_ctx = 8192
ctx = 4096
n_predict = 512
temp = 0.7
top_k = 0
top_p = 1.0
repeat_penalty = 1.1
system_prompt = "You are terse."
log_level = "DEBUG"
""",
    )
    settings = load_settings(path)
    assert settings.token is not None and settings.token.get_secret_value() == TOKEN
    assert settings.api_url == "http://127.0.0.1:8081/bot"
    assert settings.admins == [11, 22]
    assert settings.data == tmp_path / "data"
    assert settings.model == Path("/models/chinese-alpaca-7b-q4_0.gguf")
    assert settings.template == "alpaca"
    assert settings.system_prompt == "You are terse."
    assert settings.log_level == "DEBUG"
    assert settings.config == path
    assert settings.generation_defaults() == GenerationParams(
        temp=0.7, n_ctx=4096, n_predict=512, top_k=0, top_p=1.0, repeat_penalty=1.1
    )


def test_the_shipped_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "alpaca-bot.toml"
    assert load_settings(example).config == example


def test_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        tmp_path,
        'token = "1:from-file"\napi_url = "https://file.example/bot"\nadmins = [5]\n'
        'model = "/file/model.gguf"\ndb = "sqlite:////file/db.sqlite3"\nctx = 1024\n',
    )
    monkeypatch.setenv("ALPACA_BOT_TOKEN", "2:from-env")
    monkeypatch.setenv("ALPACA_BOT_API_URL", "http://127.0.0.1:9/bot")
    monkeypatch.setenv("ALPACA_BOT_ADMINS", "7")
    monkeypatch.setenv("ALPACA_BOT_MODEL", "/env/model.gguf")
    monkeypatch.setenv("ALPACA_BOT_DB", "sqlite:////env/db.sqlite3")
    settings = load_settings(path)
    assert settings.token is not None and settings.token.get_secret_value() == "2:from-env"
    assert settings.api_url == "http://127.0.0.1:9/bot"
    assert settings.admins == [7]
    assert settings.model == Path("/env/model.gguf")
    assert settings.database_url == "sqlite+aiosqlite:////env/db.sqlite3"
    # What the environment does not set still comes from the file.
    assert settings.ctx == 1024


def test_explicit_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BOT_MODEL", "/env/model.gguf")
    assert load_settings(None, model=Path("/cli/model.gguf")).model == Path("/cli/model.gguf")
    # None means "not given on the command line".
    assert load_settings(None, model=None).model == Path("/env/model.gguf")


def test_the_config_file_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, "ctx = 1024\n")
    monkeypatch.setenv("ALPACA_BOT_CONFIG", str(path))
    settings = load_settings()
    assert settings.ctx == 1024
    assert settings.config == path
    # A file given as an argument wins over the variable.
    other = write_config(tmp_path, "ctx = 512\n", name="other.toml")
    assert load_settings(other).ctx == 512


@pytest.mark.parametrize(
    ("value", "admins"),
    [("1, 2", [1, 2]), ("1,2", [1, 2]), (" 42 ", [42]), ("1,,2,", [1, 2]), ("", []),
     ("-100123, 7", [-100123, 7])],
)
def test_admins_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, admins: list[int]
) -> None:
    monkeypatch.setenv("ALPACA_BOT_ADMINS", value)
    assert load_settings().admins == admins


def test_admins_that_are_not_ids_are_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BOT_ADMINS", "1, alice")
    with pytest.raises(ConfigError, match="admins"):
        load_settings()


@pytest.mark.parametrize(
    ("db", "url"),
    [
        ("sqlite:////var/lib/alpaca-bot/bot.sqlite3",
         "sqlite+aiosqlite:////var/lib/alpaca-bot/bot.sqlite3"),
        ("sqlite+aiosqlite:////var/lib/alpaca-bot/bot.sqlite3",
         "sqlite+aiosqlite:////var/lib/alpaca-bot/bot.sqlite3"),
        ("sqlite:///relative.sqlite3", "sqlite+aiosqlite:///relative.sqlite3"),
        ("sqlite+aiosqlite:///relative.sqlite3", "sqlite+aiosqlite:///relative.sqlite3"),
    ],
)
def test_both_sqlite_url_forms_become_the_async_url(
    monkeypatch: pytest.MonkeyPatch, db: str, url: str
) -> None:
    monkeypatch.setenv("ALPACA_BOT_DB", db)
    assert load_settings().database_url == url


def test_the_default_database_lives_in_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "bot data"
    monkeypatch.setenv("ALPACA_BOT_DATA", str(data))
    settings = load_settings()
    assert settings.data == data
    assert settings.database_url == f"sqlite+aiosqlite:///{data}/alpaca-bot.sqlite3"
    url = make_url(settings.database_url)
    assert (url.drivername, url.database) == ("sqlite+aiosqlite", str(data / "alpaca-bot.sqlite3"))
    assert settings.models_directory == data / "models"


def test_an_unknown_key_names_the_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, "ctx = 1024\ntemperature = 0.5\n")
    with pytest.raises(ConfigError, match="temperature") as caught:
        load_settings(path)
    assert "ctx" not in str(caught.value)


def test_a_missing_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="nowhere.toml"):
        load_settings(missing)
    monkeypatch.setenv("ALPACA_BOT_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="nowhere.toml"):
        load_settings()


def test_a_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "ctx = \n")
    with pytest.raises(ConfigError, match="alpaca-bot.toml"):
        load_settings(path)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("ctx = 'many'\n", "ctx"),
        ("temp = 9.0\n", "temp"),
        ('api_url = "api.telegram.org"\n', "api_url"),
        ('template = "chatml-typo"\n', "template"),
        ('log_level = "LOUD"\n', "log_level"),
        ("ctx = 8192\n", "max_ctx"),
        ("ctx = 256\nn_predict = 200\n", "n_predict"),
    ],
)
def test_invalid_values_are_config_errors_naming_the_field(
    tmp_path: Path, text: str, field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings(write_config(tmp_path, text))


def test_the_token_never_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BOT_TOKEN", TOKEN)
    settings = load_settings()
    assert settings.token is not None and settings.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    # Nor in the error about another field.
    monkeypatch.setenv("ALPACA_BOT_API_URL", "ftp://nope")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert TOKEN not in str(caught.value)


def test_a_blank_token_means_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BOT_TOKEN", "  ")
    assert load_settings().token is None


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.ctx = 1  # type: ignore[misc]


def test_remote_backends_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BOT_ENGINE", "remote")
    monkeypatch.setenv(
        "ALPACA_BOT_BACKENDS",
        '[{"url": "http://127.0.0.1:8080", "kind": "llama.cpp"},'
        ' {"url": "https://gpu.example/v1/", "kind": "openai", "api_key": "sk-1", "model": "m",'
        ' "weight": 2.5}]',
    )
    settings = load_settings(None)
    assert settings.engine == "remote"
    local, gpu = settings.backends
    assert (local.url, local.kind, local.weight) == ("http://127.0.0.1:8080", "llama.cpp", 1.0)
    assert gpu.url == "https://gpu.example"  # "/v1" and the slash are the API's, not the server's
    assert gpu.api_key is not None and gpu.api_key.get_secret_value() == "sk-1"
    assert "sk-1" not in repr(settings)
    assert (gpu.kind, gpu.model, gpu.weight) == ("openai", "m", 2.5)


def test_remote_backends_from_the_config_file(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        'engine = "remote"\nbackends = [\n  { url = "http://a:8080" },\n'
        '  { url = "http://b:11434", kind = "openai", n_ctx = 8192, slots = 2 },\n]\n',
    )
    first, second = load_settings(path).backends
    assert first.kind == "llama.cpp" and second.n_ctx == 8192 and second.slots == 2


@pytest.mark.parametrize("backends, problem", [
    ("[]", "needs at least one server"),
    ('[{"url": "127.0.0.1:8080"}]', "http:// or https://"),
    ('[{"url": "http://a", "kind": "vllm"}]', "kind"),
    ('[{"url": "http://a", "weight": 0}]', "weight"),
    ('[{"url": "http://a", "colour": "red"}]', "colour"),
])
def test_bad_backends_are_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, backends: str, problem: str
) -> None:
    monkeypatch.setenv("ALPACA_BOT_ENGINE", "remote")
    monkeypatch.setenv("ALPACA_BOT_BACKENDS", backends)
    with pytest.raises(ConfigError, match=problem):
        load_settings(None)


def test_speculative_decoding_settings_by_the_issue_s_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    assert (defaults.draft, defaults.draft_max) == ("none", 4)
    path = write_config(tmp_path, 'draft = "ngram"\ndraft_max = 6\n')
    assert (load_settings(path).draft, load_settings(path).draft_max) == ("ngram", 6)
    monkeypatch.setenv("ALPACA_BOT_DRAFT", "/models/draft.gguf")
    monkeypatch.setenv("ALPACA_BOT_DRAFT_MAX", "8")
    settings = load_settings(path)
    assert (settings.draft, settings.draft_max) == ("/models/draft.gguf", 8)
    monkeypatch.setenv("ALPACA_BOT_DRAFT_MAX", "0")
    with pytest.raises(ConfigError, match="draft_max"):
        load_settings(path)
