"""Read a Hugging Face LLaMA checkpoint folder: config.json, *.safetensors or pytorch_model*.bin
weights (with or without an index), q/k rows un-permuted to Meta's order, and the tokenizer.
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
from bot.models.rows import HfUnpermute, RowSource
from bot.models.safetensors_file import read_safetensors
from bot.models.torch_checkpoint import read_torch_checkpoint
from bot.models.vocab import read_vocab

_HF_NAMES = TensorNames(
    top={"model.embed_tokens.weight": "token_embd", "model.norm.weight": "output_norm",
         "lm_head.weight": "output"},
    layer=re.compile(
        r"model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj|"
        r"input_layernorm|post_attention_layernorm)\.weight"
    ),
    layer_names={
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.down_proj": "ffn_down",
        "mlp.up_proj": "ffn_up", "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    },
)


def is_hf_checkpoint(src_dir: Path) -> bool:
    return (src_dir / "config.json").is_file()


def open_hf(src_dir: Path) -> Checkpoint:
    config_path = src_dir / "config.json"
    config = read_json(config_path)
    model_type = config.get("model_type", "llama")
    if model_type != "llama":
        raise ConversionError(f"{config_path}: model_type {model_type!r} is not a LLaMA model")
    if config.get("rope_scaling"):
        raise ConversionError(f"{config_path}: rope_scaling is not supported by this converter")

    n_head = require_value(config, config_path, "num_attention_heads", int)
    n_head_kv = optional_int(config, config_path, "num_key_value_heads") or n_head
    sources: dict[str, RowSource] = {}
    for name, tensor in _hf_tensors(src_dir).items():
        if name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed by llama.cpp from rope_theta
        gguf_name = _HF_NAMES.gguf_name(name)
        if gguf_name.endswith("attn_q.weight"):
            sources[gguf_name] = HfUnpermute(tensor, n_head, name)
        elif gguf_name.endswith("attn_k.weight"):
            sources[gguf_name] = HfUnpermute(tensor, n_head_kv, name)
        else:
            sources[gguf_name] = tensor

    params = ModelParams(
        n_vocab=row_count(sources, "token_embd.weight"),
        n_embd=require_value(config, config_path, "hidden_size", int),
        n_layer=require_value(config, config_path, "num_hidden_layers", int),
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=row_count(sources, "blk.0.ffn_gate.weight"),
        n_ctx=optional_int(config, config_path, "max_position_embeddings") or 2048,
        norm_eps=float(require_value(config, config_path, "rms_norm_eps", (int, float))),
        rope_theta=float(config.get("rope_theta") or 10000.0),
    )
    check_shapes(sources, params)
    vocab = read_vocab(src_dir, params.n_vocab)
    return Checkpoint("hf", params, in_writing_order(sources, params), vocab)


def _hf_tensors(src_dir: Path) -> dict[str, LazyTensor]:
    files: list[Path] = []
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = src_dir / index_name
        if index_path.is_file():
            weight_map = read_json(index_path).get("weight_map")
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
