"""Convert original (Meta) and Hugging Face LLaMA checkpoints to a GGUF file for llama.cpp.

Tensors stream from memory-mapped source files to the output a few megabytes of rows at a time:
shards are merged, Hugging Face q/k rows un-permuted and values converted chunk by chunk, so
peak memory stays far below one tensor whatever the model size. The output is written to a
temporary file next to the target and renamed into place only when complete.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gguf
import numpy as np
from numpy.typing import NDArray

from bot.core.templates import ALPACA_INSTRUCTION, ALPACA_PREAMBLE, ALPACA_RESPONSE
from bot.errors import ConversionError
from bot.models.checkpoint import (
    TOKEN_USER_DEFINED,
    LazyTensor,
    read_safetensors,
    read_sentencepiece,
    read_torch_checkpoint,
)
from bot.models.progress import ProgressBar, format_bytes

OUTTYPES = ("f16", "f32", "q8_0")

# Renders exactly what bot.core.templates.AlpacaFormat renders: the preamble (or the system
# message), then "### Instruction:\n\n{user}\n\n" and "### Response:\n\n{assistant}\n\n" per turn,
# and "### Response:\n\n" as the generation prompt. Whitespace control keeps the layout below
# out of the output under any trim_blocks/lstrip_blocks setting. (The constants hold no quotes
# or backslashes, so they can sit inside Jinja string literals as they are.)
ALPACA_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}\n"
    "    {%- set preamble = messages[0]['content'] -%}\n"
    "    {%- set conversation = messages[1:] -%}\n"
    "{%- else -%}\n"
    f"    {{%- set preamble = '{ALPACA_PREAMBLE}' -%}}\n"
    "    {%- set conversation = messages -%}\n"
    "{%- endif -%}\n"
    "{%- if preamble -%}\n"
    "    {{- (preamble | trim) + '\\n\\n' -}}\n"
    "{%- endif -%}\n"
    "{%- for message in conversation -%}\n"
    "    {%- if message['role'] == 'user' -%}\n"
    f"        {{{{- '{ALPACA_INSTRUCTION}\\n\\n' + (message['content'] | trim) + '\\n\\n' -}}}}\n"
    "    {%- elif message['role'] == 'assistant' -%}\n"
    f"        {{{{- '{ALPACA_RESPONSE}\\n\\n' + (message['content'] | trim) + '\\n\\n' -}}}}\n"
    "    {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    f"    {{{{- '{ALPACA_RESPONSE}\\n\\n' -}}}}\n"
    "{%- endif -%}\n"
)

# Rows are converted in pieces of about this many float32 bytes.
_CHUNK_BYTES = 16 * 1024 * 1024
_FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}


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
class ConversionReport:
    """What `convert_checkpoint` wrote."""

    outfile: Path
    layout: str  # "meta" or "hf"
    params: ModelParams
    outtype: str
    n_tensors: int
    bytes_written: int
    seconds: float


class RowSource(Protocol):
    """A tensor whose rows (first dimension) can be produced a group at a time."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def row_align(self) -> int:
        """Reads must start and stop at multiples of this many rows."""
        ...

    def read_rows(self, start: int, stop: int) -> NDArray[Any]: ...


def convert_checkpoint(
    src_dir: Path,
    outfile: Path,
    *,
    outtype: str = "f16",
    chat_template: str = "alpaca",
    progress: bool | None = None,
) -> ConversionReport:
    """Convert the checkpoint folder `src_dir` (Meta or Hugging Face layout) to `outfile`.

    `outtype` is f16, f32 or q8_0 (1-D tensors always stay f32). `chat_template` is "alpaca",
    "none" or the path of a Jinja file. `progress=None` draws a bar only when stderr is a TTY.
    Raises ConversionError for anything that prevents a correct file; no partial file remains.
    """
    started = time.monotonic()
    if outtype not in OUTTYPES:
        raise ConversionError(f"unknown output type {outtype!r}; choose one of {', '.join(OUTTYPES)}")
    template = _resolve_chat_template(chat_template)
    src_dir = Path(src_dir)
    outfile = Path(outfile)
    if not src_dir.is_dir():
        raise ConversionError(f"{src_dir} is not a directory")
    checkpoint = _open_checkpoint(src_dir)
    plans = [_TensorPlan(name, source, _output_type(source.shape, outtype))
             for name, source in checkpoint.tensors.items()]

    outdir = outfile.parent
    if not outdir.is_dir():
        raise ConversionError(f"the output directory {outdir} does not exist")
    needed = _estimate_size(plans, checkpoint.vocab, template)
    free = shutil.disk_usage(outdir).free
    if free < needed:
        raise ConversionError(
            f"not enough disk space in {outdir}: the output needs about {format_bytes(needed)}, "
            f"only {format_bytes(free)} is free"
        )

    tmp = _create_temp_file(outfile)
    writer: gguf.GGUFWriter | None = None
    try:
        writer = gguf.GGUFWriter(tmp, "llama")
        _add_metadata(writer, checkpoint, src_dir.name, outtype, template)
        written = _write_tensors(writer, plans, progress)
        writer.close()
        os.replace(tmp, outfile)
    except OSError as exc:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise ConversionError(
                f"the disk filled up while writing {outfile}: the output needs about "
                f"{format_bytes(needed)} and {format_bytes(free)} was free when conversion "
                "started; free some space and try again"
            ) from exc
        raise ConversionError(f"cannot write {outfile}: {exc.strerror or exc}") from exc
    except BaseException as exc:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, ConversionError):
            raise ConversionError(f"conversion to {outfile} failed: {exc!r}") from exc
        raise
    return ConversionReport(
        outfile=outfile,
        layout=checkpoint.layout,
        params=checkpoint.params,
        outtype=outtype,
        n_tensors=len(plans),
        bytes_written=written,
        seconds=time.monotonic() - started,
    )


def _create_temp_file(outfile: Path) -> Path:
    """An empty, new file next to `outfile`, with the permissions a plain open() would give."""
    for _ in range(100):
        tmp = outfile.with_name(f".{outfile.name}.{secrets.token_hex(4)}.part")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConversionError(
                f"cannot create a file in {outfile.parent}: {exc.strerror or exc}"
            ) from exc
    raise ConversionError(f"cannot create a temporary file in {outfile.parent}")


def _resolve_chat_template(choice: str) -> str | None:
    if choice == "alpaca":
        return ALPACA_CHAT_TEMPLATE
    if choice == "none":
        return None
    path = Path(choice)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConversionError(
            f"chat template file {path} not found (use alpaca, none or the path of a Jinja file)"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"cannot read the chat template file {path}: {exc}") from exc
    if not text.strip():
        raise ConversionError(f"the chat template file {path} is empty")
    return text


# --- reading a checkpoint folder --------------------------------------------------------------


@dataclass(frozen=True)
class _Vocab:
    pieces: list[str]
    scores: list[float]
    types: list[int]
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int


@dataclass(frozen=True)
class _Checkpoint:
    layout: str
    params: ModelParams
    tensors: dict[str, RowSource]  # by GGUF name, in writing order
    vocab: _Vocab


def _open_checkpoint(src_dir: Path) -> _Checkpoint:
    if (src_dir / "params.json").is_file() and any(src_dir.glob("consolidated.*.pth")):
        return _open_meta(src_dir)
    if (src_dir / "config.json").is_file():
        return _open_hf(src_dir)
    raise ConversionError(
        f"{src_dir} is neither an original LLaMA checkpoint (params.json with "
        "consolidated.NN.pth) nor a Hugging Face one (config.json with *.safetensors or "
        "pytorch_model*.bin)"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConversionError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConversionError(f"{path} does not hold a JSON object")
    return data


def _require(config: dict[str, Any], path: Path, key: str,
             kind: type | tuple[type, ...]) -> Any:
    value = config.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConversionError(f"{path}: missing or invalid {key!r}")
    return value


def _optional_int(config: dict[str, Any], path: Path, key: str) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConversionError(f"{path}: invalid {key!r}: {value!r}")
    return value


_META_LAYER = re.compile(
    r"layers\.(\d+)\.(attention\.w[qkvo]|feed_forward\.w[123]|attention_norm|ffn_norm)\.weight"
)
_META_NAMES = {
    "attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v",
    "attention.wo": "attn_output", "feed_forward.w1": "ffn_gate", "feed_forward.w2": "ffn_down",
    "feed_forward.w3": "ffn_up", "attention_norm": "attn_norm", "ffn_norm": "ffn_norm",
}
_META_TOP = {"tok_embeddings.weight": "token_embd", "norm.weight": "output_norm",
             "output.weight": "output"}
# How Meta split each matrix over model-parallel shards: these along their input dimension.
_META_SPLIT_BY_COLUMN = ("tok_embeddings.weight", "attention.wo.weight", "feed_forward.w2.weight")


def _open_meta(src_dir: Path) -> _Checkpoint:
    params_path = src_dir / "params.json"
    config = _read_json(params_path)
    shards = _meta_shards(src_dir)
    shard_tensors = [read_torch_checkpoint(path) for path in shards]
    names = [n for n in shard_tensors[0] if n != "rope.freqs"]
    for path, tensors in zip(shards[1:], shard_tensors[1:], strict=True):
        missing = set(names) - set(tensors)
        if missing:
            raise ConversionError(f"{path} lacks {sorted(missing)[0]} (shards do not match)")

    sources: dict[str, RowSource] = {}
    for name in names:
        sources[_meta_gguf_name(name)] = _merge_meta_shards(
            name, [tensors[name] for tensors in shard_tensors], shards
        )

    n_embd = _require(config, params_path, "dim", int)
    n_head = _require(config, params_path, "n_heads", int)
    n_head_kv = _optional_int(config, params_path, "n_kv_heads") or n_head
    params = ModelParams(
        n_vocab=_rows(sources, "token_embd.weight"),
        n_embd=n_embd,
        n_layer=_require(config, params_path, "n_layers", int),
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=_rows(sources, "blk.0.ffn_gate.weight"),
        n_ctx=_optional_int(config, params_path, "max_seq_len") or 2048,
        norm_eps=float(_require(config, params_path, "norm_eps", (int, float))),
        rope_theta=float(config.get("rope_theta") or 10000.0),
    )
    declared = config.get("vocab_size", -1)
    if isinstance(declared, int) and declared > 0 and declared != params.n_vocab:
        raise ConversionError(
            f"params.json says vocab_size {declared} but tok_embeddings has {params.n_vocab} rows"
        )
    _check_shapes(sources, params)
    vocab = _read_vocab(src_dir, params.n_vocab)
    return _Checkpoint("meta", params, _ordered(sources, params), vocab)


def _meta_shards(src_dir: Path) -> list[Path]:
    numbered: dict[int, Path] = {}
    for path in src_dir.glob("consolidated.*.pth"):
        match = re.fullmatch(r"consolidated\.(\d+)\.pth", path.name)
        if match:
            numbered[int(match.group(1))] = path
    if sorted(numbered) != list(range(len(numbered))) or not numbered:
        raise ConversionError(
            f"{src_dir}: the consolidated.NN.pth shards are not numbered 00, 01, ... "
            f"(found {', '.join(p.name for p in sorted(numbered.values()))})"
        )
    return [numbered[i] for i in range(len(numbered))]


def _meta_gguf_name(name: str) -> str:
    if name in _META_TOP:
        return f"{_META_TOP[name]}.weight"
    match = _META_LAYER.fullmatch(name)
    if match is None:
        raise ConversionError(f"unexpected tensor {name!r} in the checkpoint")
    return f"blk.{int(match.group(1))}.{_META_NAMES[match.group(2)]}.weight"


def _merge_meta_shards(name: str, parts: list[LazyTensor], shards: list[Path]) -> RowSource:
    first = parts[0]
    if len(parts) == 1 or len(first.shape) < 2:
        return first  # one shard, or a norm (each shard holds a full copy)
    by_column = name.endswith(_META_SPLIT_BY_COLUMN)
    axis = 1 if by_column else 0
    for path, part in zip(shards, parts, strict=True):
        other = [n for i, n in enumerate(part.shape) if i != axis]
        if len(part.shape) != 2 or other != [n for i, n in enumerate(first.shape) if i != axis]:
            raise ConversionError(
                f"{path}: {name} has shape {part.shape}, which does not fit shard 0's "
                f"{first.shape} split along dimension {axis}"
            )
    return _ConcatColumns(parts) if by_column else _ConcatRows(parts)


_HF_LAYER = re.compile(
    r"model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj|"
    r"input_layernorm|post_attention_layernorm)\.weight"
)
_HF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.down_proj": "ffn_down",
    "mlp.up_proj": "ffn_up", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_HF_TOP = {"model.embed_tokens.weight": "token_embd", "model.norm.weight": "output_norm",
           "lm_head.weight": "output"}


def _open_hf(src_dir: Path) -> _Checkpoint:
    config_path = src_dir / "config.json"
    config = _read_json(config_path)
    model_type = config.get("model_type", "llama")
    if model_type != "llama":
        raise ConversionError(f"{config_path}: model_type {model_type!r} is not a LLaMA model")
    if config.get("rope_scaling"):
        raise ConversionError(f"{config_path}: rope_scaling is not supported by this converter")

    n_head = _require(config, config_path, "num_attention_heads", int)
    n_head_kv = _optional_int(config, config_path, "num_key_value_heads") or n_head
    sources: dict[str, RowSource] = {}
    for name, tensor in _hf_tensors(src_dir).items():
        if name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed by llama.cpp from rope_theta
        gguf_name = _hf_gguf_name(name)
        if gguf_name.endswith("attn_q.weight"):
            sources[gguf_name] = _HfUnpermute(tensor, n_head, name)
        elif gguf_name.endswith("attn_k.weight"):
            sources[gguf_name] = _HfUnpermute(tensor, n_head_kv, name)
        else:
            sources[gguf_name] = tensor

    params = ModelParams(
        n_vocab=_rows(sources, "token_embd.weight"),
        n_embd=_require(config, config_path, "hidden_size", int),
        n_layer=_require(config, config_path, "num_hidden_layers", int),
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=_rows(sources, "blk.0.ffn_gate.weight"),
        n_ctx=_optional_int(config, config_path, "max_position_embeddings") or 2048,
        norm_eps=float(_require(config, config_path, "rms_norm_eps", (int, float))),
        rope_theta=float(config.get("rope_theta") or 10000.0),
    )
    _check_shapes(sources, params)
    vocab = _read_vocab(src_dir, params.n_vocab)
    return _Checkpoint("hf", params, _ordered(sources, params), vocab)


def _hf_tensors(src_dir: Path) -> dict[str, LazyTensor]:
    files: list[Path] = []
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = src_dir / index_name
        if index_path.is_file():
            weight_map = _read_json(index_path).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ConversionError(f"{index_path} has no weight_map")
            files = [src_dir / f for f in sorted(set(weight_map.values()))]
            break
    if not files:
        files = sorted(src_dir.glob("*.safetensors")) or sorted(src_dir.glob("pytorch_model*.bin"))
    if not files:
        raise ConversionError(f"{src_dir} has config.json but no *.safetensors or "
                              "pytorch_model*.bin weights")
    tensors: dict[str, LazyTensor] = {}
    for path in files:
        if not path.is_file():
            raise ConversionError(f"{path} is listed in the index but missing")
        found = read_safetensors(path) if path.suffix == ".safetensors" else read_torch_checkpoint(path)
        for name, tensor in found.items():
            if name in tensors:
                raise ConversionError(f"{name} appears in more than one weight file")
            tensors[name] = tensor
    return tensors


def _hf_gguf_name(name: str) -> str:
    if name in _HF_TOP:
        return f"{_HF_TOP[name]}.weight"
    match = _HF_LAYER.fullmatch(name)
    if match is None:
        raise ConversionError(f"unexpected tensor {name!r} in the checkpoint")
    return f"blk.{int(match.group(1))}.{_HF_NAMES[match.group(2)]}.weight"


def _rows(sources: dict[str, RowSource], name: str) -> int:
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


def _check_shapes(sources: dict[str, RowSource], p: ModelParams) -> None:
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


def _ordered(sources: dict[str, RowSource], p: ModelParams) -> dict[str, RowSource]:
    return {name: sources[name] for name in _expected_shapes(p) if name in sources}


def _read_vocab(src_dir: Path, n_rows: int) -> _Vocab:
    path = src_dir / "tokenizer.model"
    if not path.is_file():
        raise ConversionError(f"{src_dir} has no tokenizer.model (sentencepiece)")
    sp = read_sentencepiece(path)
    pieces, scores, types = list(sp.pieces), list(sp.scores), list(sp.types)
    pad_id = sp.pad_id
    added_path = src_dir / "added_tokens.json"
    n_added = 0
    if n_rows > len(pieces) and added_path.is_file():
        added = _read_json(added_path)
        by_id = sorted((token_id, token) for token, token_id in added.items()
                       if isinstance(token_id, int) and token_id >= len(pieces))
        ids = [token_id for token_id, _ in by_id]
        if ids != list(range(len(pieces), len(pieces) + len(ids))):
            raise ConversionError(f"{added_path}: the added token ids are not consecutive after "
                                  f"the tokenizer's {len(pieces)} tokens")
        for token_id, token in by_id:
            pieces.append(token)
            scores.append(-1000.0)
            types.append(TOKEN_USER_DEFINED)
            if pad_id < 0 and token in ("[PAD]", "<pad>"):
                pad_id = token_id
        n_added = len(by_id)
    if len(pieces) != n_rows:
        source = f"tokenizer.model has {len(sp.pieces)}"
        if n_added:
            source += f" + {n_added} from added_tokens.json = {len(pieces)}"
        raise ConversionError(
            f"vocabulary size mismatch: {source} tokens but the embedding has {n_rows} rows"
        )
    return _Vocab(pieces, scores, types, sp.bos_id, sp.eos_id, sp.unk_id, pad_id)


# --- row sources: shard merging and un-permuting, one group of rows at a time ----------------


class _ConcatRows:
    """Shards of a matrix split along its output dimension (rows)."""

    def __init__(self, parts: Sequence[RowSource]) -> None:
        self._parts = list(parts)
        self.shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
        self.row_align = 1

    def read_rows(self, start: int, stop: int) -> NDArray[Any]:
        pieces = []
        offset = 0
        for part in self._parts:
            lo, hi = max(start - offset, 0), min(stop - offset, part.shape[0])
            if lo < hi:
                pieces.append(part.read_rows(lo, hi))
            offset += part.shape[0]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)


class _ConcatColumns:
    """Shards of a matrix split along its input dimension (columns)."""

    def __init__(self, parts: Sequence[RowSource]) -> None:
        self._parts = list(parts)
        self.shape = (parts[0].shape[0], sum(p.shape[1] for p in parts))
        self.row_align = 1

    def read_rows(self, start: int, stop: int) -> NDArray[Any]:
        return np.concatenate([p.read_rows(start, stop) for p in self._parts], axis=1)


class _HfUnpermute:
    """Undo Hugging Face's q/k row order (rotate-half) back to Meta's interleaved pairs.

    Within each head HF holds the first element of every rotary pair, then every second one;
    llama.cpp (like Meta) expects the pairs next to each other.
    """

    def __init__(self, source: RowSource, n_head: int, name: str) -> None:
        rows = source.shape[0]
        if len(source.shape) != 2 or rows % n_head or (rows // n_head) % 2:
            raise ConversionError(
                f"{name} has shape {source.shape}, which does not split into {n_head} heads"
            )
        self._source = source
        self._n_head = n_head
        self.shape = source.shape
        self.row_align = rows // n_head

    def read_rows(self, start: int, stop: int) -> NDArray[Any]:
        head_rows = self.row_align
        if start % head_rows or stop % head_rows:
            raise ValueError("HF q/k rows must be read in whole heads")
        rows = self._source.read_rows(start, stop)
        heads = (stop - start) // head_rows
        return (rows.reshape(heads, 2, head_rows // 2, *rows.shape[1:])
                .swapaxes(1, 2)
                .reshape(rows.shape))


# --- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TensorPlan:
    name: str
    source: RowSource
    qtype: gguf.GGMLQuantizationType

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.source.shape)

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return math.prod(self.shape[:-1]) * (self.shape[-1] // block) * size


def _output_type(shape: tuple[int, ...], outtype: str) -> gguf.GGMLQuantizationType:
    # Norms and other vectors stay f32, as llama.cpp's own converter keeps them.
    if len(shape) < 2 or outtype == "f32":
        return gguf.GGMLQuantizationType.F32
    if outtype == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16  # f16, and q8_0 rows that do not fill whole blocks


def _encode(rows: NDArray[Any], qtype: gguf.GGMLQuantizationType) -> NDArray[Any]:
    if qtype == gguf.GGMLQuantizationType.F32:
        return rows.astype(np.float32, copy=False)
    if qtype == gguf.GGMLQuantizationType.F16:
        return rows.astype(np.float16, copy=False)
    return gguf.quants.quantize(rows.astype(np.float32, copy=False), qtype)


def _estimate_size(plans: Sequence[_TensorPlan], vocab: _Vocab, template: str | None) -> int:
    align = gguf.GGUF_DEFAULT_ALIGNMENT
    data = sum(gguf.GGUFWriter.ggml_pad(p.nbytes, align) for p in plans)
    infos = sum(len(p.name) + 64 for p in plans)
    tokens = sum(len(t.encode("utf-8")) + 8 + 4 + 4 for t in vocab.pieces)
    return data + infos + tokens + len(template or "") + 64 * 1024


def _add_metadata(writer: gguf.GGUFWriter, checkpoint: _Checkpoint, name: str, outtype: str,
                  template: str | None) -> None:
    p = checkpoint.params
    writer.add_name(name)
    writer.add_file_type(_FILE_TYPES[outtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(p.n_vocab)
    writer.add_context_length(p.n_ctx)
    writer.add_embedding_length(p.n_embd)
    writer.add_block_count(p.n_layer)
    writer.add_feed_forward_length(p.n_ff)
    writer.add_rope_dimension_count(p.head_dim)
    writer.add_head_count(p.n_head)
    writer.add_head_count_kv(p.n_head_kv)
    writer.add_layer_norm_rms_eps(p.norm_eps)
    writer.add_rope_freq_base(p.rope_theta)

    vocab = checkpoint.vocab
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.pieces)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    for token_id, add in ((vocab.bos_id, writer.add_bos_token_id),
                          (vocab.eos_id, writer.add_eos_token_id),
                          (vocab.unk_id, writer.add_unk_token_id),
                          (vocab.pad_id, writer.add_pad_token_id)):
        if token_id >= 0:
            add(token_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if template is not None:
        writer.add_chat_template(template)


def _write_tensors(writer: gguf.GGUFWriter, plans: Sequence[_TensorPlan],
                   progress: bool | None) -> int:
    """Write header, metadata and tensor infos with GGUFWriter, then stream the tensor data.

    GGUFWriter's own data writers take whole arrays; the data section is written here chunk by
    chunk in the same layout (each tensor aligned to the file's alignment).
    """
    for plan in plans:
        writer.add_tensor_info(plan.name, plan.shape, np.dtype(np.float32), plan.nbytes,
                               raw_dtype=plan.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    assert writer.fout is not None and len(writer.fout) == 1
    out = writer.fout[0]
    writer.write_padding(out, out.tell())

    total = sum(plan.nbytes for plan in plans)
    with ProgressBar(total, label="converting", enabled=progress) as bar:
        for plan in plans:
            written = 0
            for chunk in _encoded_chunks(plan):
                out.write(np.ascontiguousarray(chunk).data)
                written += chunk.nbytes
                bar.update(chunk.nbytes)
            if written != plan.nbytes:
                raise ConversionError(f"internal error: {plan.name} produced {written} bytes, "
                                      f"expected {plan.nbytes}")
            writer.write_padding(out, written)
    out.flush()
    os.fsync(out.fileno())
    return out.tell()


def _encoded_chunks(plan: _TensorPlan) -> Iterator[NDArray[Any]]:
    source = plan.source
    n_rows = source.shape[0] if source.shape else 1
    row_elems = math.prod(source.shape[1:])
    align = source.row_align
    step = max(align, _CHUNK_BYTES // max(1, row_elems * 4) // align * align)
    for start in range(0, n_rows, step):
        yield _encode(source.read_rows(start, min(start + step, n_rows)), plan.qtype)
