"""Per-chat generation parameters: the llama.cpp flags a chat can set, their ranges and validation."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Literal

from bot.errors import InvalidParameter

MIN_PROMPT_BUDGET = 64
"""Tokens a context must keep for the prompt after reserving the reply length (-n)."""


@dataclass(frozen=True, kw_only=True)
class ParamSpec:
    """One settable parameter: its command, the llama.cpp flag it mirrors, type and range."""

    name: str
    command: str
    flag: str
    kind: Literal["int", "float"]
    minimum: float
    maximum: float
    help: str

    def range_text(self, maximum: float | None = None) -> str:
        top = self.maximum if maximum is None else maximum
        return f"{_fmt(self.minimum)}–{_fmt(top)}"


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


SPECS: dict[str, ParamSpec] = {
    spec.name: spec
    for spec in (
        ParamSpec(name="temp", command="temp", flag="--temp", kind="float", minimum=0.0,
                  maximum=5.0, help="sampling temperature; 0 picks the most likely token"),
        ParamSpec(name="n_ctx", command="ctx", flag="-c", kind="int", minimum=128,
                  maximum=131072, help="context window in tokens"),
        ParamSpec(name="n_predict", command="n", flag="-n", kind="int", minimum=1,
                  maximum=8192, help="maximum reply length in tokens"),
        ParamSpec(name="top_k", command="top_k", flag="--top_k", kind="int", minimum=0,
                  maximum=1000, help="sample from the k most likely tokens; 0 disables"),
        ParamSpec(name="top_p", command="top_p", flag="--top_p", kind="float", minimum=0.0,
                  maximum=1.0, help="nucleus sampling threshold; 1 disables"),
        ParamSpec(name="repeat_penalty", command="repeat_penalty", flag="--repeat_penalty",
                  kind="float", minimum=0.5, maximum=2.5,
                  help="penalty for repeating recent tokens; 1 disables"),
    )
}
BY_COMMAND: dict[str, ParamSpec] = {spec.command: spec for spec in SPECS.values()}


@dataclass(frozen=True, kw_only=True)
class GenerationParams:
    """Sampling and window parameters of one chat (the -c -n --temp --top_k --top_p ... flags)."""

    temp: float = 0.2
    n_ctx: int = 2048
    n_predict: int = 256
    top_k: int = 40
    top_p: float = 0.9
    repeat_penalty: float = 1.3

    @property
    def prompt_budget(self) -> int:
        """Tokens available for the prompt: the context minus the reserved reply length."""
        return self.n_ctx - self.n_predict

    def as_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, kw_only=True)
class ParamLimits:
    """Limits that depend on the loaded model and the configuration, not on the parameter."""

    max_ctx: int
    """min(model's trained context, configured maximum, the engine's context size)."""

    def maximum(self, spec: ParamSpec) -> float:
        if spec.name == "n_ctx":
            return min(spec.maximum, self.max_ctx)
        if spec.name == "n_predict":
            return min(spec.maximum, self.max_ctx - MIN_PROMPT_BUDGET)
        return spec.maximum


def parse_value(spec: ParamSpec, text: str, limits: ParamLimits) -> float | int:
    """Parse a user-typed value for `spec`, raising InvalidParameter with a one-line usage."""
    raw = text.strip()
    shown = raw if len(raw) <= 40 else raw[:39] + "…"  # never echo a pasted novel back
    maximum = limits.maximum(spec)
    usage = f"Usage: /{spec.command} VALUE ({spec.kind}, {spec.range_text(maximum)}): {spec.help}"
    try:
        value: float | int = int(raw) if spec.kind == "int" else float(raw)
    except ValueError:
        raise InvalidParameter(f"{shown!r} is not a valid value. {usage}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidParameter(f"{shown!r} is not a valid value. {usage}")
    if not spec.minimum <= value <= maximum:
        raise InvalidParameter(f"{shown} is out of range. {usage}")
    return value


def with_value(
    params: GenerationParams, spec: ParamSpec, value: float | int, limits: ParamLimits
) -> GenerationParams:
    """Return `params` with one value changed, checking that -c still leaves room for -n."""
    updated = replace(params, **{spec.name: value})  # type: ignore[arg-type]
    if updated.prompt_budget < MIN_PROMPT_BUDGET:
        if spec.name == "n_ctx":
            raise InvalidParameter(
                f"/ctx {value} leaves no room for the prompt: it must be at least "
                f"{updated.n_predict + MIN_PROMPT_BUDGET} while /n is {updated.n_predict}."
            )
        raise InvalidParameter(
            f"/n {value} leaves no room for the prompt: it must be at most "
            f"{updated.n_ctx - MIN_PROMPT_BUDGET} while /ctx is {updated.n_ctx}."
        )
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
    return replace(params, n_ctx=n_ctx, n_predict=n_predict), changes


def format_value(spec: ParamSpec, value: float | int) -> str:
    return _fmt(value) if spec.kind == "float" else str(int(value))
