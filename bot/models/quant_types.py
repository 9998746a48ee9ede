"""The quantization types llama.cpp makes here: their names and llama_ftype numbers, about how
many bits a weight takes in each, and parsing the name or number a user gives."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from bot.errors import QuantizeError


class QuantType(enum.IntEnum):
    """The output types llama.cpp can make without an importance matrix; values are llama_ftype."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q8_0 = 7
    Q5_0 = 8
    Q5_1 = 9
    Q2_K = 10
    Q3_K_S = 11
    Q3_K_M = 12
    Q3_K_L = 13
    Q4_K_S = 14
    Q4_K_M = 15
    Q5_K_S = 16
    Q5_K_M = 17
    Q6_K = 18
    IQ4_NL = 25
    IQ3_S = 26
    IQ3_M = 27
    IQ4_XS = 30
    BF16 = 32
    TQ1_0 = 36
    TQ2_0 = 37
    MXFP4_MOE = 38
    Q1_0 = 40
    Q2_0 = 41

    @property
    def label(self) -> str:
        """The name used on the command line: q4_0, q4_k_m, f16."""
        return self.name.lower()

    @property
    def description(self) -> str:
        return _DETAILS[self].description

    @property
    def bits_per_weight(self) -> float:
        """About how many bits a weight of a LLaMA-7B-shaped model takes, mixes included."""
        return _DETAILS[self].bits_per_weight

    @property
    def fallback_bits_per_weight(self) -> float | None:
        """Bits per weight of the type llama.cpp falls back to for rows not a multiple of 256
        (None where it needs no fallback)."""
        return _DETAILS[self].fallback_bits

    @property
    def is_float(self) -> bool:
        return self in (QuantType.F32, QuantType.F16, QuantType.BF16)


@dataclass(frozen=True)
class _TypeDetails:
    description: str
    bits_per_weight: float
    fallback_bits: float | None = None
    """Bits per weight of the type llama.cpp falls back to for rows not a multiple of 256."""


_DETAILS: Mapping[QuantType, _TypeDetails] = {
    QuantType.F32: _TypeDetails("32-bit float, no quantization", 32.0),
    QuantType.F16: _TypeDetails("16-bit float, no quantization", 16.0),
    QuantType.BF16: _TypeDetails("16-bit bfloat, no quantization", 16.0),
    QuantType.Q8_0: _TypeDetails("8.5 bpw, nearly lossless", 8.5),
    QuantType.Q6_K: _TypeDetails("6.6 bpw k-quant, nearly lossless", 6.6, 8.5),
    QuantType.Q5_1: _TypeDetails("6.0 bpw legacy 5-bit with offset", 6.0),
    QuantType.Q5_0: _TypeDetails("5.5 bpw legacy 5-bit", 5.5),
    QuantType.Q5_K_M: _TypeDetails("5.7 bpw k-quant mix, very low loss", 5.7, 6.0),
    QuantType.Q5_K_S: _TypeDetails("5.5 bpw k-quant, very low loss", 5.6, 6.0),
    QuantType.Q4_1: _TypeDetails("5.0 bpw legacy 4-bit with offset (the Alpaca guide's 3)", 5.0),
    QuantType.Q4_0: _TypeDetails("4.5 bpw legacy 4-bit (the Alpaca guide's 2)", 4.5),
    QuantType.Q4_K_M: _TypeDetails("4.9 bpw k-quant mix, the usual choice", 4.9, 5.5),
    QuantType.Q4_K_S: _TypeDetails("4.6 bpw k-quant", 4.6, 5.5),
    QuantType.IQ4_NL: _TypeDetails("4.5 bpw non-linear 4-bit", 4.6),
    QuantType.IQ4_XS: _TypeDetails("4.25 bpw non-linear 4-bit", 4.5, 4.6),
    QuantType.Q3_K_L: _TypeDetails("4.3 bpw 3-bit k-quant mix, noticeable loss", 4.3, 4.6),
    QuantType.Q3_K_M: _TypeDetails("3.9 bpw 3-bit k-quant mix, noticeable loss", 3.9, 4.6),
    QuantType.Q3_K_S: _TypeDetails("3.5 bpw 3-bit k-quant, high loss", 3.5, 4.6),
    QuantType.IQ3_M: _TypeDetails("3.7 bpw 3-bit i-quant mix, high loss", 3.9, 4.6),
    QuantType.IQ3_S: _TypeDetails("3.4 bpw 3-bit i-quant, high loss", 3.6, 4.6),
    QuantType.Q2_K: _TypeDetails("3.4 bpw 2-bit k-quant mix, very high loss", 3.4, 4.6),
    QuantType.Q2_0: _TypeDetails("2.25 bpw 2-bit, for models trained for it", 2.4),
    QuantType.TQ2_0: _TypeDetails("2.1 bpw ternary, only for ternary (BitNet) models", 2.3, 4.6),
    QuantType.TQ1_0: _TypeDetails("1.7 bpw ternary, only for ternary (BitNet) models", 1.9, 4.6),
    QuantType.Q1_0: _TypeDetails("1.1 bpw 1-bit, only for 1-bit trained models", 1.2),
    QuantType.MXFP4_MOE: _TypeDetails("MXFP4 experts, Q8_0 elsewhere (MoE models)", 8.5),
}

QUANT_TYPES: Mapping[str, QuantType] = MappingProxyType({t.label: t for t in QuantType})
"""name -> QuantType (an int equal to llama.cpp's llama_ftype), in llama_ftype order."""

# llama.cpp knows these but refuses them without an importance matrix (IQ3_XS quantizes some
# matrices to IQ3_XXS), which alpaca-bot does not compute.
_NEEDS_IMATRIX = ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs",
                  "q2_k_s")


def parse_quant_type(text: str | int | QuantType) -> QuantType:
    """`q4_0`, `Q4_K_M`, or a llama_ftype number such as the Alpaca guide's `2` (q4_0) or `3`."""
    if isinstance(text, QuantType):
        return text
    raw = str(text).strip()
    if raw.isdigit():
        try:
            return QuantType(int(raw))
        except ValueError:
            pass
    else:
        found = QUANT_TYPES.get(raw.lower())
        if found is not None:
            return found
    if raw.lower() in _NEEDS_IMATRIX:
        reason = f"{raw} needs an importance matrix, which alpaca-bot does not compute"
    else:
        reason = f"unknown quantization type {raw!r}"
    choices = ", ".join(f"{t.label} ({t.value})" for t in QuantType)
    raise QuantizeError(f"{reason}; choose one of: {choices}")
