"""Tiny LLaMA checkpoints written from scratch, without torch, for the converter's tests.

Weights are generated in Meta's layout (the reference the forward pass runs on) and written as a
Meta folder (`consolidated.NN.pth` zip pickles split like Meta's model-parallel shards) or as a
Hugging Face folder (safetensors or pytorch_model.bin, q/k rows permuted the HF way).
"""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyConfig:
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 4
    n_ff: int = 192
    n_vocab: int = 360
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def meta_shapes(cfg: TinyConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Meta checkpoint, in Meta's names and (out, in) shapes."""
    kv = cfg.n_kv_heads * cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (cfg.n_vocab, cfg.dim)}
    for i in range(cfg.n_layers):
        shapes |= {
            f"layers.{i}.attention.wq.weight": (cfg.dim, cfg.dim),
            f"layers.{i}.attention.wk.weight": (kv, cfg.dim),
            f"layers.{i}.attention.wv.weight": (kv, cfg.dim),
            f"layers.{i}.attention.wo.weight": (cfg.dim, cfg.dim),
            f"layers.{i}.feed_forward.w1.weight": (cfg.n_ff, cfg.dim),
            f"layers.{i}.feed_forward.w2.weight": (cfg.dim, cfg.n_ff),
            f"layers.{i}.feed_forward.w3.weight": (cfg.n_ff, cfg.dim),
            f"layers.{i}.attention_norm.weight": (cfg.dim,),
            f"layers.{i}.ffn_norm.weight": (cfg.dim,),
        }
    shapes |= {"norm.weight": (cfg.dim,), "output.weight": (cfg.n_vocab, cfg.dim)}
    return shapes


def random_weights(cfg: TinyConfig, *, seed: int, dtype: str = "F16") -> dict[str, NDArray[Any]]:
    """Random float32 weights, each exactly representable in `dtype` (F16, BF16 or F32).

    Scaled so activations stay near unit size and the logits spread over several units, which
    makes the top-1 token well defined.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in meta_shapes(cfg).items():
        if len(shape) == 1:
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name == "tok_embeddings.weight":
            w = rng.standard_normal(shape)
        else:
            gain = 3.0 if name == "output.weight" else 1.0
            w = gain * rng.standard_normal(shape) / math.sqrt(shape[1])
        weights[name] = round_to(w.astype(np.float32), dtype)
    return weights


def round_to(values: NDArray[Any], dtype: str) -> NDArray[np.float32]:
    """`values` as float32, rounded to what `dtype` can hold."""
    values = values.astype(np.float32)
    if dtype == "F32":
        return values
    if dtype == "F16":
        return values.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        return bf16_bits_to_f32(f32_to_bf16_bits(values))
    raise ValueError(dtype)


def f32_to_bf16_bits(values: NDArray[np.float32]) -> NDArray[np.uint16]:
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
    return rounded.astype(np.uint16)


def bf16_bits_to_f32(bits: NDArray[np.uint16]) -> NDArray[np.float32]:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def encode(values: NDArray[Any], dtype: str) -> bytes:
    """The raw little-endian bytes of `values` stored as `dtype`."""
    if dtype == "BF16":
        return f32_to_bf16_bits(values).astype("<u2").tobytes()
    return np.ascontiguousarray(values, dtype={"F16": "<f2", "F32": "<f4"}[dtype]).tobytes()


# --- tokenizer --------------------------------------------------------------------------------

_CORPUS = """The quick brown fox jumps over the lazy dog. Alpacas are domesticated camelids.
Below is an instruction that describes a task. Write a response that appropriately completes it.
Llamas and alpacas live in the Andes; they eat grass and hay, and they hum when anxious!
Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation: ? ( ) - , ' " and more words to merge.
""".splitlines()


def train_tokenizer(vocab_size: int = 360) -> bytes:
    """A small byte-fallback sentencepiece model (with a user-defined <sep>), trained in memory."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 20),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        user_defined_symbols=["<sep>"],
        minloglevel=2,
    )
    return model.getvalue()


# --- torch zip pickles, written by hand -------------------------------------------------------

_STORAGE_CLASSES = {"F16": "HalfStorage", "F32": "FloatStorage", "BF16": "BFloat16Storage"}


@dataclass(frozen=True)
class StoredTensor:
    """A tensor as torch pickles it: a view (offset, size, stride) of a storage key."""

    key: str
    dtype: str
    numel: int  # elements in the storage
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int = 0


class _Pickle:
    """Emits pickle protocol 2 opcodes; enough for a state dict of torch tensors."""

    def __init__(self) -> None:
        self.out = bytearray(pickle.PROTO + b"\x02")

    def global_(self, module: str, name: str) -> None:
        self.out += pickle.GLOBAL + f"{module}\n{name}\n".encode()

    def str_(self, value: str) -> None:
        data = value.encode()
        self.out += pickle.BINUNICODE + struct.pack("<I", len(data)) + data

    def int_(self, value: int) -> None:
        if 0 <= value < 2**31:
            self.out += pickle.BININT + struct.pack("<i", value)
        else:
            data = value.to_bytes(9, "little", signed=True)
            self.out += pickle.LONG1 + bytes([len(data)]) + data

    def ints(self, values: Iterable[int]) -> None:
        self.out += pickle.MARK
        for v in values:
            self.int_(v)
        self.out += pickle.TUPLE

    def tensor(self, t: StoredTensor) -> None:
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out += pickle.MARK
        # the storage, as a persistent id: ('storage', torch.HalfStorage, key, 'cpu', numel)
        self.out += pickle.MARK
        self.str_("storage")
        self.global_("torch", _STORAGE_CLASSES[t.dtype])
        self.str_(t.key)
        self.str_("cpu")
        self.int_(t.numel)
        self.out += pickle.TUPLE + pickle.BINPERSID
        self.int_(t.offset)
        self.ints(t.shape)
        self.ints(t.stride)
        self.out += pickle.NEWFALSE
        self.global_("collections", "OrderedDict")
        self.out += pickle.EMPTY_TUPLE + pickle.REDUCE
        self.out += pickle.TUPLE + pickle.REDUCE

    def state_dict(self, tensors: Mapping[str, StoredTensor], extra: bytes = b"") -> bytes:
        self.out += pickle.EMPTY_DICT + pickle.MARK
        for name, t in tensors.items():
            self.str_(name)
            self.tensor(t)
        self.out += extra  # e.g. one more key/value pair, already pickled
        self.out += pickle.SETITEMS + pickle.STOP
        return bytes(self.out)


def malicious_entry(module: str, name: str, argument: str) -> bytes:
    """A key/value pair whose value is `module.name(argument)`, for the refusal tests."""
    p = _Pickle()
    p.out.clear()
    p.str_("payload")
    p.global_(module, name)
    p.str_(argument)
    p.out += pickle.TUPLE1 + pickle.REDUCE
    return bytes(p.out)


def tampered_entry(key: str, target: str) -> bytes:
    """A key/value pair whose tensor is then rewritten by a BUILD opcode to read `target`."""
    p = _Pickle()
    p.out.clear()
    p.str_("tampered")
    p.tensor(stored_tensor(key, "F32", (1,)))
    p.out += pickle.EMPTY_DICT
    p.str_("data")
    p.str_(target)
    p.out += pickle.SETITEM + pickle.BUILD
    return bytes(p.out)


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _aligned_info(name: str, offset: int) -> zipfile.ZipInfo:
    """A member whose data starts on a 64-byte boundary, padded like torch does ("FB" extra)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    pad = -(offset + 30 + len(name.encode()) + 4) % 64
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    return info


def write_torch_zip(
    path: Path,
    tensors: Mapping[str, NDArray[Any]],
    *,
    dtype: str = "F16",
    archive: str = "archive",
    extra_pickle: bytes = b"",
    views: Mapping[str, tuple[StoredTensor, bytes]] | None = None,
) -> None:
    """Write `tensors` as `torch.save(state_dict)` does: a zip of data.pkl plus raw storages.

    `views` adds tensors given directly as a storage description and its bytes (for strided
    views); `extra_pickle` is spliced into the pickled dict (for the refusal tests).
    """
    stored: dict[str, StoredTensor] = {}
    blobs: dict[str, bytes] = {}
    for i, (name, values) in enumerate(tensors.items()):
        shape = tuple(values.shape)
        stored[name] = StoredTensor(str(i), dtype, values.size, shape, _contiguous(shape))
        blobs[str(i)] = encode(values, dtype)
    for name, (t, blob) in (views or {}).items():
        stored[name] = t
        blobs[t.key] = blob
    write_torch_zip_stream(
        path,
        _Pickle().state_dict(stored, extra_pickle),
        ((key, len(blob), _chunks_of(blob)) for key, blob in blobs.items()),
        archive=archive,
    )


def _chunks_of(blob: bytes) -> Callable[[IO[bytes]], object]:
    return lambda f: f.write(blob)


def write_torch_zip_stream(
    path: Path,
    data_pkl: bytes,
    storages: Iterable[tuple[str, int, Callable[[IO[bytes]], object]]],
    *,
    archive: str = "archive",
) -> None:
    """The zip layout of torch.save, with each storage's bytes produced by a writer callback."""
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(_aligned_info(f"{archive}/data.pkl", f.tell()), data_pkl)
        zf.writestr(_aligned_info(f"{archive}/byteorder", f.tell()), b"little")
        for key, size, write in storages:
            info = _aligned_info(f"{archive}/data/{key}", f.tell())
            info.file_size = size
            with zf.open(info, "w") as member:
                write(member)
        zf.writestr(_aligned_info(f"{archive}/version", f.tell()), b"3\n")


def stored_tensor(key: str, dtype: str, shape: tuple[int, ...]) -> StoredTensor:
    """A contiguous tensor that fills its own storage."""
    return StoredTensor(key, dtype, math.prod(shape), shape, _contiguous(shape))


def state_dict_pickle(tensors: Mapping[str, StoredTensor]) -> bytes:
    return _Pickle().state_dict(tensors)


# --- checkpoint folders -----------------------------------------------------------------------

_SPLIT_BY_COLUMN = ("tok_embeddings.weight", "attention.wo.weight", "feed_forward.w2.weight")


def split_meta(weights: Mapping[str, NDArray[Any]], n_shards: int) -> list[dict[str, NDArray[Any]]]:
    """Split full weights into model-parallel shards the way Meta's checkpoints are split."""
    shards: list[dict[str, NDArray[Any]]] = [{} for _ in range(n_shards)]
    for name, w in weights.items():
        if w.ndim == 1:
            parts = [w] * n_shards
        else:
            parts = np.split(w, n_shards, axis=1 if name.endswith(_SPLIT_BY_COLUMN) else 0)
        for shard, part in zip(shards, parts, strict=True):
            shard[name] = part
    return shards


def split_meta_shapes(shapes: Mapping[str, tuple[int, ...]],
                      n_shards: int) -> list[dict[str, tuple[int, ...]]]:
    """The shapes `split_meta` gives each shard (for checkpoints too big to hold in memory)."""
    result = []
    for _ in range(n_shards):
        shard = {}
        for name, shape in shapes.items():
            if len(shape) == 1:
                shard[name] = shape
            elif name.endswith(_SPLIT_BY_COLUMN):
                shard[name] = (shape[0], shape[1] // n_shards)
            else:
                shard[name] = (shape[0] // n_shards, shape[1])
        result.append(shard)
    return result


def write_meta_checkpoint(
    folder: Path,
    cfg: TinyConfig,
    weights: Mapping[str, NDArray[Any]],
    tokenizer: bytes,
    *,
    n_shards: int = 1,
    dtype: str = "F16",
    added_tokens: Mapping[str, int] | None = None,
    rope_theta_in_params: bool = True,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = {
        "dim": cfg.dim, "multiple_of": 32, "n_heads": cfg.n_heads, "n_layers": cfg.n_layers,
        "norm_eps": cfg.norm_eps, "vocab_size": -1,
    }
    if cfg.n_kv_heads != cfg.n_heads:
        params["n_kv_heads"] = cfg.n_kv_heads
    if rope_theta_in_params:
        params["rope_theta"] = cfg.rope_theta
    (folder / "params.json").write_text(json.dumps(params))
    (folder / "tokenizer.model").write_bytes(tokenizer)
    if added_tokens:
        (folder / "added_tokens.json").write_text(json.dumps(added_tokens))
    # Original checkpoints carry the rotary frequencies too; the converter ignores them.
    freqs = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2) / cfg.head_dim)
    for i, shard in enumerate(split_meta(weights, n_shards)):
        shard = {**shard, "rope.freqs": freqs.astype(np.float32)}
        write_torch_zip(folder / f"consolidated.{i:02d}.pth", shard, dtype=dtype,
                        archive=f"consolidated.{i:02d}")
    return folder


def hf_permute(w: NDArray[Any], n_heads: int) -> NDArray[Any]:
    """Meta's interleaved rotary pairs to HF's rotate-half order (as HF's conversion does)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, w.shape[1]).transpose(0, 2, 1, 3).reshape(w.shape)


def to_hf_names(cfg: TinyConfig, weights: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    top = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    layer = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
             "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
             "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj",
             "feed_forward.w3": "mlp.up_proj", "attention_norm": "input_layernorm",
             "ffn_norm": "post_attention_layernorm"}
    out = {}
    for name, w in weights.items():
        if name in top:
            out[top[name]] = w
            continue
        _, i, *rest = name.split(".")
        key = ".".join(rest[:-1])
        if key == "attention.wq":
            w = hf_permute(w, cfg.n_heads)
        elif key == "attention.wk":
            w = hf_permute(w, cfg.n_kv_heads)
        out[f"model.layers.{i}.{layer[key]}.weight"] = w
    return out


def write_safetensors(path: Path, tensors: Mapping[str, NDArray[Any]], dtype: str) -> int:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name, values in tensors.items():
        blob = encode(values, dtype)
        header[name] = {"dtype": dtype, "shape": list(values.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for blob in blobs:
            f.write(blob)
    return offset


def write_hf_checkpoint(
    folder: Path,
    cfg: TinyConfig,
    weights: Mapping[str, NDArray[Any]],
    tokenizer: bytes,
    *,
    fmt: str = "safetensors",
    n_files: int = 2,
    with_index: bool = True,
    dtype: str = "F16",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg.dim,
        "intermediate_size": cfg.n_ff, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta, "vocab_size": cfg.n_vocab,
        "max_position_embeddings": 512, "tie_word_embeddings": False, "rope_scaling": None,
        "torch_dtype": {"F16": "float16", "F32": "float32", "BF16": "bfloat16"}[dtype],
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.model").write_bytes(tokenizer)
    hf = to_hf_names(cfg, weights)
    names = list(hf)
    groups = [names[i::n_files] for i in range(n_files)]
    weight_map: dict[str, str] = {}
    total = 0
    for i, group in enumerate(groups, start=1):
        part = {name: hf[name] for name in group}
        if fmt == "safetensors":
            filename = "model.safetensors" if n_files == 1 else (
                f"model-{i:05d}-of-{n_files:05d}.safetensors")
            total += write_safetensors(folder / filename, part, dtype)
        else:
            filename = "pytorch_model.bin" if n_files == 1 else (
                f"pytorch_model-{i:05d}-of-{n_files:05d}.bin")
            write_torch_zip(folder / filename, part, dtype=dtype, archive="archive")
        weight_map |= {name: filename for name in group}
    if with_index:
        index = "model.safetensors.index.json" if fmt == "safetensors" else (
            "pytorch_model.bin.index.json")
        (folder / index).write_text(json.dumps({"metadata": {"total_size": total},
                                                "weight_map": weight_map}))
    return folder


def write_tiny_f16(work: Path, models: Path) -> Path:
    """A tiny f16 GGUF made by our converter in `models` (rows wide enough for every legacy
    quant type), from a checkpoint written under `work`."""
    from bot.models.convert import convert_checkpoint

    cfg = TinyConfig(dim=128, n_layers=2, n_heads=4, n_kv_heads=4, n_ff=256)
    folder = write_meta_checkpoint(work / "ckpt", cfg, random_weights(cfg, seed=1), train_tokenizer(360))
    models.mkdir(parents=True, exist_ok=True)
    out = models / "tiny-f16.gguf"
    convert_checkpoint(folder, out, progress=False)
    return out
