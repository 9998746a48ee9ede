"""Per-chat generation parameters: values for the knobs of `bot.core.knobs`, their validation,
and the limits that depend on the loaded model."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from bot.core.knobs import SAMPLING, Knob, KnobValues, Value
from bot.errors import InvalidParameter
from bot.i18n import _

MIN_PROMPT_BUDGET = 64
"""Tokens a context must keep for the prompt after reserving the reply length (-n)."""


class GenerationParams(KnobValues, Mapping[str, Value]):
    """One value for every knob (the -c -n --temp --top_k ... flags of one chat); immutable.

    `GenerationParams(temp=0.7)` takes the table's defaults for the knobs not named; values are
    read as attributes (`params.temp`) or by name (`params["temp"]`).
    """

    __slots__ = ()

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def replace(self, **changes: Value) -> GenerationParams:
        return GenerationParams(**{**self._values, **changes})

    @property
    def n_ctx(self) -> int:
        return int(self._values["n_ctx"])

    @property
    def n_predict(self) -> int:
        return int(self._values["n_predict"])

    @property
    def prompt_budget(self) -> int:
        """Tokens available for the prompt: the context minus the reserved reply length."""
        return self.n_ctx - self.n_predict

    def sampling(self) -> dict[str, float | int]:
        """What the engine's sampler receives: the sampling knobs, with llama.cpp's
        `--repeat-last-n -1` ("the whole context") resolved to this chat's context size."""
        values = {knob.name: float(self._values[knob.name]) if knob.kind == "float"
                  else int(self._values[knob.name]) for knob in SAMPLING}
        if values.get("repeat_last_n") == -1:
            values["repeat_last_n"] = self.n_ctx
        return values


@dataclass(frozen=True, kw_only=True)
class ParamLimits:
    """Limits that depend on the loaded model and the configuration, not on the parameter."""

    max_ctx: int
    """min(model's trained context, configured maximum, the engine's context size)."""

    def maximum(self, knob: Knob) -> float:
        if knob.name == "n_ctx":
            return min(knob.maximum, self.max_ctx)
        if knob.name == "n_predict":
            return min(knob.maximum, self.max_ctx - MIN_PROMPT_BUDGET)
        return knob.maximum


def usage(knob: Knob, limits: ParamLimits) -> str:
    """The one-line usage answer of a knob's command."""
    if knob.choices:
        return _("Usage: /{command} {choices}: {help}", command=knob.command,
                 choices=knob.range_text(), help=_(knob.help))
    return _("Usage: /{command} VALUE ({kind}, {range}): {help}", command=knob.command,
             kind=knob.kind, range=knob.range_text(limits.maximum(knob)), help=_(knob.help))


def parse_value(knob: Knob, text: str, limits: ParamLimits) -> Value:
    """Parse a user-typed value for `knob`, raising InvalidParameter with a one-line usage."""
    raw = text.strip()
    shown = raw if len(raw) <= 40 else raw[:39] + "…"  # never echo a pasted novel back
    maximum = limits.maximum(knob)
    line = usage(knob, limits)
    if knob.choices:
        if raw.lower() not in knob.choices:
            raise InvalidParameter(_("{value!r} is not a valid value. {usage}",
                                     value=shown, usage=line))
        return raw.lower()
    try:
        value: float | int = int(raw) if knob.kind == "int" else float(raw)
    except ValueError:
        raise InvalidParameter(_("{value!r} is not a valid value. {usage}",
                                 value=shown, usage=line)) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidParameter(_("{value!r} is not a valid value. {usage}",
                                 value=shown, usage=line))
    if not knob.minimum <= value <= maximum:
        raise InvalidParameter(_("{value} is out of range. {usage}", value=shown, usage=line))
    return value


def with_value(
    params: GenerationParams, knob: Knob, value: Value, limits: ParamLimits
) -> GenerationParams:
    """Return `params` with one value changed, checking that -c still leaves room for -n."""
    updated = params.replace(**{knob.name: value})
    if updated.prompt_budget < MIN_PROMPT_BUDGET:
        if knob.name == "n_ctx":
            raise InvalidParameter(_(
                "/ctx {value} leaves no room for the prompt: it must be at least {least} while "
                "/n is {n_predict}.",
                value=value, least=updated.n_predict + MIN_PROMPT_BUDGET,
                n_predict=updated.n_predict,
            ))
        raise InvalidParameter(_(
            "/n {value} leaves no room for the prompt: it must be at most {most} while /ctx is "
            "{n_ctx}.",
            value=value, most=updated.n_ctx - MIN_PROMPT_BUDGET, n_ctx=updated.n_ctx,
        ))
    return updated


def clamp_to_limits(params: GenerationParams, limits: ParamLimits) -> tuple[GenerationParams, list[str]]:
    """Fit stored parameters into new limits (a smaller model); returns the changes made."""
    changes: list[str] = []
    n_ctx = min(params.n_ctx, limits.max_ctx)
    if n_ctx != params.n_ctx:
        changes.append(f"/ctx {params.n_ctx} → {n_ctx}")
    n_predict = min(params.n_predict, n_ctx - MIN_PROMPT_BUDGET)
    if n_predict != params.n_predict:
        changes.append(f"/n {params.n_predict} → {n_predict}")
    return params.replace(n_ctx=n_ctx, n_predict=n_predict), changes


def format_value(knob: Knob, value: Value) -> str:
    return knob.format(value)
