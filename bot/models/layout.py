"""What a layout reader makes of a checkpoint folder: the architecture, the tensors by GGUF name
and the vocabulary, plus what the Meta and Hugging Face readers share: the mapping of their
tensor names to GGUF's, and the config and shape checks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import ConversionError
from bot.models.rows import RowSource


@dataclass(frozen=True)
class ModelParams:
    """The architecture of a LLaMA model, as written to the GGUF metadata."""

    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx: int
    norm_eps: float
    rope_theta: float

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass(frozen=True)
class Vocab:
    """A sentencepiece vocabulary with any added tokens, and its special token ids (-1: none)."""

    pieces: list[str]
    scores: list[float]
    types: list[int]
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder read and checked, ready to write."""

    layout: str  # "meta" or "hf"
    params: ModelParams
    tensors: dict[str, RowSource]  # by GGUF name, in writing order
    vocab: Vocab


@dataclass(frozen=True)
class TensorNames:
    """How a layout names its tensors, and their GGUF names: whole-model tensors by name, layer
    tensors by a pattern whose groups are the layer number and a key of `layer_names`."""

    top: Mapping[str, str]
    layer: re.Pattern[str]
    layer_names: Mapping[str, str]

    def gguf_name(self, name: str) -> str:
        if name in self.top:
            return f"{self.top[name]}.weight"
        match = self.layer.fullmatch(name)
        if match is None:
            raise ConversionError(f"unexpected tensor {name!r} in the checkpoint")
        return f"blk.{int(match.group(1))}.{self.layer_names[match.group(2)]}.weight"


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConversionError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConversionError(f"{path} does not hold a JSON object")
    return data


def require_value(config: dict[str, Any], path: Path, key: str,
                  kind: type | tuple[type, ...]) -> Any:
    value = config.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConversionError(f"{path}: missing or invalid {key!r}")
    return value


def optional_int(config: dict[str, Any], path: Path, key: str) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConversionError(f"{path}: invalid {key!r}: {value!r}")
    return value


def row_count(sources: dict[str, RowSource], name: str) -> int:
    if name not in sources:
        raise ConversionError(f"the checkpoint has no tensor for {name}")
    return sources[name].shape[0]


def _expected_shapes(p: ModelParams) -> dict[str, tuple[int, ...]]:
    kv = p.n_head_kv * p.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (p.n_vocab, p.n_embd),
        "output_norm.weight": (p.n_embd,),
        "output.weight": (p.n_vocab, p.n_embd),
    }
    for i in range(p.n_layer):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (p.n_embd,),
            f"blk.{i}.attn_q.weight": (p.n_head * p.head_dim, p.n_embd),
            f"blk.{i}.attn_k.weight": (kv, p.n_embd),
            f"blk.{i}.attn_v.weight": (kv, p.n_embd),
            f"blk.{i}.attn_output.weight": (p.n_embd, p.n_head * p.head_dim),
            f"blk.{i}.ffn_norm.weight": (p.n_embd,),
            f"blk.{i}.ffn_gate.weight": (p.n_ff, p.n_embd),
            f"blk.{i}.ffn_down.weight": (p.n_embd, p.n_ff),
            f"blk.{i}.ffn_up.weight": (p.n_ff, p.n_embd),
        }
    return shapes


def check_shapes(sources: dict[str, RowSource], p: ModelParams) -> None:
    if p.n_embd % p.n_head or p.n_head % p.n_head_kv or p.head_dim % 2:
        raise ConversionError(
            f"inconsistent attention heads: dim {p.n_embd}, {p.n_head} heads, "
            f"{p.n_head_kv} key/value heads"
        )
    expected = _expected_shapes(p)
    for name, shape in expected.items():
        if name == "output.weight" and name not in sources:
            continue  # tied embeddings: llama.cpp reuses token_embd
        if name not in sources:
            raise ConversionError(f"the checkpoint has no tensor for {name}")
        if tuple(sources[name].shape) != shape:
            raise ConversionError(
                f"{name} has shape {tuple(sources[name].shape)}, expected {shape} from the "
                f"model parameters (dim {p.n_embd}, {p.n_head} heads, {p.n_head_kv} kv heads)"
            )
    extra = sorted(set(sources) - set(expected))
    if extra:
        raise ConversionError(f"the checkpoint has tensors for more layers than declared: {extra[0]}")


def in_writing_order(sources: dict[str, RowSource], p: ModelParams) -> dict[str, RowSource]:
    return {name: sources[name] for name in _expected_shapes(p) if name in sources}
