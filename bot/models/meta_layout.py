"""Read an original (Meta) LLaMA checkpoint folder: params.json, consolidated.NN.pth shards
merged tensor by tensor, and the tokenizer.
"""

from __future__ import annotations

import re
from pathlib import Path

from bot.errors import ConversionError
from bot.models.layout import (
    Checkpoint,
    ModelParams,
    TensorNames,
    check_shapes,
    in_writing_order,
    optional_int,
    read_json,
    require_value,
    row_count,
)
from bot.models.lazy_tensor import LazyTensor
from bot.models.rows import ConcatColumns, ConcatRows, RowSource
from bot.models.torch_checkpoint import read_torch_checkpoint
from bot.models.vocab import read_vocab

_META_NAMES = TensorNames(
    top={"tok_embeddings.weight": "token_embd", "norm.weight": "output_norm",
         "output.weight": "output"},
    layer=re.compile(
        r"layers\.(\d+)\.(attention\.w[qkvo]|feed_forward\.w[123]|attention_norm|ffn_norm)\.weight"
    ),
    layer_names={
        "attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v",
        "attention.wo": "attn_output", "feed_forward.w1": "ffn_gate", "feed_forward.w2": "ffn_down",
        "feed_forward.w3": "ffn_up", "attention_norm": "attn_norm", "ffn_norm": "ffn_norm",
    },
)
# How Meta split each matrix over model-parallel shards: these along their input dimension.
_META_SPLIT_BY_COLUMN = ("tok_embeddings.weight", "attention.wo.weight", "feed_forward.w2.weight")


def is_meta_checkpoint(src_dir: Path) -> bool:
    return (src_dir / "params.json").is_file() and any(src_dir.glob("consolidated.*.pth"))


def open_meta(src_dir: Path) -> Checkpoint:
    params_path = src_dir / "params.json"
    config = read_json(params_path)
    shards = _meta_shards(src_dir)
    shard_tensors = [read_torch_checkpoint(path) for path in shards]
    names = [n for n in shard_tensors[0] if n != "rope.freqs"]
    for path, tensors in zip(shards[1:], shard_tensors[1:], strict=True):
        missing = set(names) - set(tensors)
        if missing:
            raise ConversionError(f"{path} lacks {sorted(missing)[0]} (shards do not match)")

    sources: dict[str, RowSource] = {}
    for name in names:
        sources[_META_NAMES.gguf_name(name)] = _merge_meta_shards(
            name, [tensors[name] for tensors in shard_tensors], shards
        )

    n_embd = require_value(config, params_path, "dim", int)
    n_head = require_value(config, params_path, "n_heads", int)
    n_head_kv = optional_int(config, params_path, "n_kv_heads") or n_head
    params = ModelParams(
        n_vocab=row_count(sources, "token_embd.weight"),
        n_embd=n_embd,
        n_layer=require_value(config, params_path, "n_layers", int),
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=row_count(sources, "blk.0.ffn_gate.weight"),
        n_ctx=optional_int(config, params_path, "max_seq_len") or 2048,
        norm_eps=float(require_value(config, params_path, "norm_eps", (int, float))),
        rope_theta=float(config.get("rope_theta") or 10000.0),
    )
    declared = config.get("vocab_size", -1)
    if isinstance(declared, int) and declared > 0 and declared != params.n_vocab:
        raise ConversionError(
            f"params.json says vocab_size {declared} but tok_embeddings has {params.n_vocab} rows"
        )
    check_shapes(sources, params)
    vocab = read_vocab(src_dir, params.n_vocab)
    return Checkpoint("meta", params, in_writing_order(sources, params), vocab)


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
    return ConcatColumns(parts) if by_column else ConcatRows(parts)
