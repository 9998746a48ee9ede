"""Per-chat parameters: ranges, parsing of typed values, the /ctx–/n cross-check, clamping."""

from __future__ import annotations

import pytest

from bot.core.knobs import BY_COMMAND, Knob
from bot.core.knobs import BY_NAME as SPECS
from bot.core.params import (
    MIN_PROMPT_BUDGET,
    GenerationParams,
    ParamLimits,
    clamp_to_limits,
    format_value,
    parse_value,
    with_value,
)
from bot.errors import InvalidParameter, UserError

# Large enough that no spec's own maximum is capped by the model.
ROOMY = ParamLimits(max_ctx=SPECS["n_ctx"].maximum)
SPEC_IDS = [name for name, spec in SPECS.items() if not spec.choices]
"""The knobs that take a number (/reasoning takes a word: tests/unit/test_knobs.py)."""


def _text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _step(spec: Knob) -> float:
    return 1 if spec.kind == "int" else 0.01


def _rejection(spec: Knob, raw: str, limits: ParamLimits = ROOMY) -> str:
    with pytest.raises(InvalidParameter) as caught:
        parse_value(spec, raw, limits)
    return str(caught.value)


def _assert_usage_message(message: str, spec: Knob, shown: str) -> None:
    """One line that starts with the value as typed and ends with the command's usage."""
    assert "\n" not in message
    assert message.startswith(shown + " ")
    assert f". Usage: /{spec.command} VALUE ({spec.kind}, " in message


def test_the_commands_and_flags_are_llama_cpp_s() -> None:
    assert {spec.command: spec.flag for spec in SPECS.values()} == {
        "temp": "--temp",
        "ctx": "-c",
        "n": "-n",
        "top_k": "--top_k",
        "top_p": "--top_p",
        "min_p": "--min-p",
        "repeat_penalty": "--repeat_penalty",
        "repeat_last_n": "--repeat-last-n",
        "reasoning": "--reasoning",
        "reasoning_budget": "--reasoning-budget",
    }
    assert {command: spec.name for command, spec in BY_COMMAND.items()} == {
        "temp": "temp",
        "ctx": "n_ctx",
        "n": "n_predict",
        "top_k": "top_k",
        "top_p": "top_p",
        "min_p": "min_p",
        "repeat_penalty": "repeat_penalty",
        "repeat_last_n": "repeat_last_n",
        "reasoning": "reasoning",
        "reasoning_budget": "reasoning_budget",
    }


def test_defaults_are_the_chinese_alpaca_guide_s_and_fit_their_ranges() -> None:
    params = GenerationParams()
    assert params.as_dict() == {
        "temp": 0.2, "n_ctx": 2048, "n_predict": 256, "top_k": 40, "top_p": 0.9,
        "min_p": 0.05, "repeat_penalty": 1.3, "repeat_last_n": 64, "reasoning": "hide",
        "reasoning_budget": 1024,
    }
    assert params.prompt_budget == 2048 - 256
    for name in SPEC_IDS:
        assert SPECS[name].minimum <= params[name] <= SPECS[name].maximum, name


@pytest.mark.parametrize("name", SPEC_IDS)
def test_the_minimum_and_maximum_are_accepted(name: str) -> None:
    spec = SPECS[name]
    for bound in (spec.minimum, spec.maximum):
        value = parse_value(spec, _text(bound), ROOMY)
        assert value == bound
        assert isinstance(value, int if spec.kind == "int" else float)


@pytest.mark.parametrize("name", SPEC_IDS)
def test_just_outside_the_range_is_rejected_with_a_usage_line(name: str) -> None:
    spec = SPECS[name]
    for outside in (spec.minimum - _step(spec), spec.maximum + _step(spec)):
        raw = _text(round(outside, 2))
        message = _rejection(spec, raw)
        _assert_usage_message(message, spec, raw)
        assert message.startswith(f"{raw} is out of range. ")
        assert f"({spec.kind}, {spec.range_text()})" in message


def test_the_usage_line_shows_the_range_and_the_help() -> None:
    message = _rejection(SPECS["temp"], "9")
    assert message == (
        "9 is out of range. Usage: /temp VALUE (float, 0–5): "
        "sampling temperature; 0 picks the most likely token"
    )


@pytest.mark.parametrize("name", SPEC_IDS)
@pytest.mark.parametrize("raw", ["abc", "", "1,5", "0x10", "½", "nan", "NaN", "inf", "-inf",
                                 "Infinity"])
def test_non_numbers_and_non_finite_values_are_rejected(name: str, raw: str) -> None:
    spec = SPECS[name]
    message = _rejection(spec, raw)
    _assert_usage_message(message, spec, repr(raw))
    assert message.startswith(f"{raw!r} is not a valid value. ")


def test_a_value_with_a_newline_still_gives_a_one_line_message() -> None:
    message = _rejection(SPECS["temp"], "0.5\n/ctx 9")
    assert "\n" not in message
    assert message.startswith("'0.5\\n/ctx 9'")


@pytest.mark.parametrize("name", [name for name in SPEC_IDS if SPECS[name].kind == "int"])
@pytest.mark.parametrize("raw", ["1.5", "300.0", "1e3"])
def test_int_parameters_refuse_fractions_and_exponents(name: str, raw: str) -> None:
    spec = SPECS[name]
    _assert_usage_message(_rejection(spec, raw), spec, repr(raw))


def test_float_parameters_accept_ints_and_exponents_and_surrounding_spaces() -> None:
    assert parse_value(SPECS["temp"], " 1 ", ROOMY) == 1.0
    assert parse_value(SPECS["top_p"], "5e-1", ROOMY) == 0.5
    assert parse_value(SPECS["n_predict"], " 128\n", ROOMY) == 128


def test_ctx_is_capped_by_the_limits() -> None:
    spec = SPECS["n_ctx"]
    limits = ParamLimits(max_ctx=4096)
    assert parse_value(spec, "4096", limits) == 4096
    message = _rejection(spec, "4097", limits)
    _assert_usage_message(message, spec, "4097")
    assert "(int, 128–4096)" in message
    # The spec's own maximum is no longer allowed either.
    _rejection(spec, _text(spec.maximum), limits)


def test_the_reply_length_is_capped_to_leave_a_prompt_budget_in_the_largest_context() -> None:
    spec = SPECS["n_predict"]
    limits = ParamLimits(max_ctx=2048)
    assert limits.maximum(spec) == 2048 - MIN_PROMPT_BUDGET
    assert parse_value(spec, "1984", limits) == 1984
    assert "(int, 1–1984)" in _rejection(spec, "1985", limits)
    # Other parameters do not depend on the model.
    assert limits.maximum(SPECS["temp"]) == SPECS["temp"].maximum


def test_with_value_changes_one_value() -> None:
    params = GenerationParams()
    updated = with_value(params, SPECS["temp"], 0.7, ROOMY)
    assert updated == GenerationParams(temp=0.7)
    assert params == GenerationParams()  # frozen: the original is untouched


def test_ctx_must_leave_the_prompt_budget_after_n() -> None:
    params = GenerationParams(n_ctx=2048, n_predict=256)
    smallest = 256 + MIN_PROMPT_BUDGET
    assert with_value(params, SPECS["n_ctx"], smallest, ROOMY).n_ctx == smallest
    with pytest.raises(InvalidParameter) as caught:
        with_value(params, SPECS["n_ctx"], smallest - 1, ROOMY)
    assert str(caught.value) == (
        f"/ctx {smallest - 1} leaves no room for the prompt: it must be at least {smallest} "
        "while /n is 256."
    )


def test_n_must_leave_the_prompt_budget_inside_ctx() -> None:
    params = GenerationParams(n_ctx=2048, n_predict=256)
    largest = 2048 - MIN_PROMPT_BUDGET
    assert with_value(params, SPECS["n_predict"], largest, ROOMY).n_predict == largest
    with pytest.raises(InvalidParameter) as caught:
        with_value(params, SPECS["n_predict"], largest + 1, ROOMY)
    assert str(caught.value) == (
        f"/n {largest + 1} leaves no room for the prompt: it must be at most {largest} "
        "while /ctx is 2048."
    )


def test_invalid_parameter_is_a_user_error() -> None:
    assert issubclass(InvalidParameter, UserError)


def test_clamp_leaves_params_within_limits_alone() -> None:
    params = GenerationParams(n_ctx=2048, n_predict=256)
    assert clamp_to_limits(params, ParamLimits(max_ctx=2048)) == (params, [])


def test_clamp_shrinks_ctx_and_then_n() -> None:
    params = GenerationParams(n_ctx=8192, n_predict=4096, temp=0.9)
    clamped, changes = clamp_to_limits(params, ParamLimits(max_ctx=2048))
    assert clamped == GenerationParams(n_ctx=2048, n_predict=2048 - MIN_PROMPT_BUDGET, temp=0.9)
    assert changes == ["/ctx 8192 → 2048", "/n 4096 → 1984"]


def test_clamp_shrinks_ctx_alone_when_n_still_fits() -> None:
    clamped, changes = clamp_to_limits(
        GenerationParams(n_ctx=4096, n_predict=256), ParamLimits(max_ctx=1024)
    )
    assert (clamped.n_ctx, clamped.n_predict) == (1024, 256)
    assert changes == ["/ctx 4096 → 1024"]


def test_clamp_repairs_an_n_too_large_for_its_own_ctx() -> None:
    clamped, changes = clamp_to_limits(
        GenerationParams(n_ctx=1024, n_predict=1000), ParamLimits(max_ctx=4096)
    )
    assert (clamped.n_ctx, clamped.n_predict) == (1024, 960)
    assert changes == ["/n 1000 → 960"]


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [("temp", 0.2, "0.2"), ("temp", 1.0, "1"), ("n_ctx", 2048, "2048"), ("top_p", 0.95, "0.95")],
)
def test_format_value(name: str, value: float, shown: str) -> None:
    assert format_value(SPECS[name], value) == shown


def test_a_huge_pasted_value_is_not_echoed_back_whole() -> None:
    from bot.core.knobs import BY_NAME as SPECS
    from bot.core.params import ParamLimits, parse_value
    from bot.errors import InvalidParameter

    with pytest.raises(InvalidParameter) as caught:
        parse_value(SPECS["temp"], "x" * 10_000, ParamLimits(max_ctx=4096))
    assert len(str(caught.value)) < 300
    assert str(caught.value).startswith("'" + "x" * 39 + "…'")
