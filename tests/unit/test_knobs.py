"""The knob table reaches everything: Telegram, the console, the CLI flags, the config and its
environment variables, the database columns and the engine's sampler."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import Float, Integer, String

from bot.chat.commands import BY_NAME as COMMANDS
from bot.chat.commands import commands_for, help_text, menu
from bot.cli import build_parser
from bot.core.knobs import KNOBS, Knob
from bot.core.params import GenerationParams
from bot.core.prompt import Turn
from bot.core.reasoning import ModelReasoning
from bot.core.templates import JinjaFormat
from bot.engine.base import SamplingParams
from bot.engine.sampler import chain_stages
from bot.settings import load_settings
from bot.store.schema import ChatRow

IDS = [knob.name for knob in KNOBS]


def sample_value(knob: Knob) -> float | int | str:
    """A valid value other than the default."""
    if knob.choices:
        return next(choice for choice in knob.choices if choice != knob.default)
    assert not isinstance(knob.default, str)
    if knob.kind == "int":
        return int(knob.default) + 3 if knob.default + 3 <= knob.maximum else int(knob.minimum)
    return round((knob.default + knob.maximum) / 2, 3) if knob.default < knob.maximum else knob.minimum


@pytest.fixture(autouse=True)
def no_alpaca_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("ALPACA_BOT_"):
            monkeypatch.delenv(key)


def test_the_table_is_consistent() -> None:
    assert len({knob.name for knob in KNOBS}) == len(KNOBS)
    assert len({knob.command for knob in KNOBS}) == len(KNOBS)
    assert len({knob.key for knob in KNOBS}) == len(KNOBS)
    for knob in KNOBS:
        if knob.kind == "choice":
            assert knob.default in knob.choices and len(set(knob.choices)) > 1, knob.name
        else:
            assert not knob.choices and not isinstance(knob.default, str), knob.name
            assert knob.minimum <= knob.default <= knob.maximum, knob.name
        assert knob.command.isidentifier() and knob.command.islower(), knob.command
        assert len(knob.command) <= 32 and knob.help and knob.cli_flags


@pytest.mark.parametrize("name", IDS)
def test_every_knob_is_a_telegram_command_in_the_menu_and_help(name: str) -> None:
    knob = next(k for k in KNOBS if k.name == name)
    command = COMMANDS[knob.command]
    assert "telegram" in command.fronts
    assert command in commands_for("telegram")
    assert (knob.command, knob.menu_line) in menu()
    assert command.access == "chat_admins" and not command.guard_reading
    assert f"/{knob.command} {knob.args} — " in help_text("telegram", "hi", group=True)


@pytest.mark.parametrize("name", IDS)
def test_every_knob_is_a_console_command(name: str) -> None:
    knob = next(k for k in KNOBS if k.name == name)
    assert COMMANDS[knob.command] in commands_for("console")
    assert f"/{knob.command} {knob.args} — " in help_text("console", "hi", group=False)


@pytest.mark.parametrize("name", IDS)
def test_every_knob_is_a_flag_of_alpaca_bot_chat(name: str) -> None:
    knob = next(k for k in KNOBS if k.name == name)
    value = sample_value(knob)
    for flag in knob.cli_flags:
        args = build_parser().parse_args(["chat", flag, str(value)])
        assert getattr(args, knob.name) == value, flag


@pytest.mark.parametrize("name", IDS)
def test_every_knob_has_a_config_key_and_an_environment_variable(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    knob = next(k for k in KNOBS if k.name == name)
    value = sample_value(knob)
    extra = {"max_ctx": 131072} if knob.name == "n_ctx" else {}
    config = tmp_path / "bot.toml"
    config.write_text(f"{knob.key} = {knob.toml(value)}\n", encoding="utf-8")
    assert load_settings(config, **extra).generation_defaults()[knob.name] == value
    monkeypatch.setenv(f"ALPACA_BOT_{knob.key.upper()}", str(value))
    assert load_settings(**extra).generation_defaults()[knob.name] == value
    invalid = "loud" if knob.choices else str(knob.maximum + 1)
    monkeypatch.setenv(f"ALPACA_BOT_{knob.key.upper()}", invalid)
    with pytest.raises(Exception, match=knob.key):
        load_settings(**extra)


def test_the_example_config_lists_every_knob_with_its_default() -> None:
    example = (Path(__file__).parents[2] / "config" / "alpaca-bot.toml").read_text("utf-8")
    for knob in KNOBS:
        assert f"\n# {knob.key} = {knob.toml(knob.default)}\n" in example, knob.key


@pytest.mark.parametrize("name", IDS)
def test_every_knob_is_a_nullable_column_of_the_chats_table(name: str) -> None:
    knob = next(k for k in KNOBS if k.name == name)
    column = ChatRow.__table__.columns[knob.name]
    assert column.nullable
    kinds = {"float": Float, "int": Integer, "choice": String}
    assert isinstance(column.type, kinds[knob.kind])


@pytest.mark.parametrize("name", IDS)
def test_every_knob_reaches_what_the_engine_receives(name: str) -> None:
    knob = next(k for k in KNOBS if k.name == name)
    value = sample_value(knob)
    params = GenerationParams(**{knob.name: value})
    sampling = SamplingParams(n_predict=params.n_predict, **params.sampling())
    if knob.role == "sampling":
        assert getattr(sampling, knob.name) == value
    elif knob.name == "n_predict":
        assert sampling.n_predict == value
    elif knob.role == "reasoning":  # what the request tells the engine of the thinking
        chat_format = JinjaFormat("{{ messages[0]['content'] }}<think>\n")
        reasoning = ModelReasoning(chat_format)
        prompt = reasoning.format_for(params.reasoning).render(None, [Turn("user", "hi")])
        thinking = reasoning.request(prompt, mode=params.reasoning,
                                     budget=params.reasoning_budget)
        assert thinking.budget == params.reasoning_budget
        assert thinking.quiet == (params.reasoning == "off")
    else:  # the window: the prompt budget the reply leaves
        assert params.prompt_budget == params.n_ctx - params.n_predict


@pytest.mark.parametrize("name", [knob.name for knob in KNOBS if knob.role == "sampling"])
def test_every_sampling_knob_shapes_the_pool_s_sampler_chain(name: str) -> None:
    knob = next(k for k in KNOBS if k.name == name)
    base = SamplingParams(n_predict=16)
    changed = SamplingParams(n_predict=16, **{knob.name: sample_value(knob)})
    assert chain_stages(changed, n_vocab=100, seed=1) != chain_stages(base, n_vocab=100, seed=1)


def test_repeat_last_n_minus_one_means_the_whole_context() -> None:
    params = GenerationParams(repeat_last_n=-1, n_ctx=1024)
    assert params.sampling()["repeat_last_n"] == 1024


def test_a_word_knob_takes_its_words_only() -> None:
    from bot.core.params import ParamLimits, parse_value
    from bot.errors import InvalidParameter

    knob = next(k for k in KNOBS if k.command == "reasoning")
    limits = ParamLimits(max_ctx=2048)
    assert parse_value(knob, " SHOW ", limits) == "show"
    with pytest.raises(InvalidParameter, match="hide|show|off"):
        parse_value(knob, "loud", limits)
    assert build_parser().parse_args(["chat", "--reasoning-budget", "-1"]).reasoning_budget == -1
    with pytest.raises(SystemExit):
        build_parser().parse_args(["chat", "--reasoning", "loud"])
