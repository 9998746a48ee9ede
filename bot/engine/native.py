"""The facts of a model llama.cpp has loaded, as the local engines describe it: its metadata,
the `ModelInfo` the rest of the bot sees, and what one token costs in the KV cache.

Loading itself (the file checked first, safe parameters, llama.cpp's log) is `bot.llama`'s,
shared with the model tools."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

from bot.engine.base import ModelInfo
from bot.engine.tokens import token_text


def model_meta(model: Any, key: str) -> str | None:
    """A metadata value of a loaded model (`llama_model *`) as text, or None if it has none."""
    import llama_cpp

    size = 4096
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, size)
        if n < 0:
            return None
        if n < size:
            return buffer.value.decode("utf-8", errors="replace")
        size = n + 1


def describe_model(model: Any, vocab: Any, path: Path, *, n_ctx: int) -> ModelInfo:
    """The `ModelInfo` of a loaded model whose context holds `n_ctx` tokens per chat."""
    import llama_cpp

    return ModelInfo(
        path=path,
        name=model_meta(model, "general.name") or path.stem,
        n_ctx_train=int(llama_cpp.llama_model_n_ctx_train(model)),
        n_ctx=n_ctx,
        chat_template=model_meta(model, "tokenizer.chat_template"),
        bos_token=token_text(vocab, int(llama_cpp.llama_vocab_bos(vocab))),
        eos_token=token_text(vocab, int(llama_cpp.llama_vocab_eos(vocab))),
        file_type=model_meta(model, "general.file_type") or "",
        size_bytes=path.stat().st_size,
    )


def kv_bytes_per_token(model: Any, kv_type: str) -> int:
    """Bytes one token takes in the KV cache: keys and values of every layer."""
    import llama_cpp

    head_dim = llama_cpp.llama_model_n_embd(model) // llama_cpp.llama_model_n_head(model)
    kv_width = 2 * llama_cpp.llama_model_n_head_kv(model) * head_dim
    element = 34 / 32 if kv_type == "q8_0" else 2  # q8_0: 32 values in 34 bytes
    return int(llama_cpp.llama_model_n_layer(model) * kv_width * element)
