"""A plain numpy LLaMA forward pass over Meta-layout weights: the ground truth for conversions.

Written from the model's definition, not from llama.cpp: RMSNorm, rotary embedding on
interleaved pairs (Meta's layout), grouped-query causal attention, SwiGLU feed-forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tests.models.checkpoints import TinyConfig


def rms_norm(x: NDArray[np.float64], weight: NDArray[Any], eps: float) -> NDArray[np.float64]:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rotary(x: NDArray[np.float64], theta: float) -> NDArray[np.float64]:
    """Rotate each (2i, 2i+1) pair of every head of x [tokens, heads, head_dim] by pos * freq_i."""
    n_tokens, _, head_dim = x.shape
    freqs = theta ** (-np.arange(0, head_dim, 2) / head_dim)  # [head_dim / 2]
    angles = np.arange(n_tokens)[:, None] * freqs[None, :]  # [tokens, head_dim / 2]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def silu(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return x / (1.0 + np.exp(-x))


def attention(x: NDArray[np.float64], w: Mapping[str, NDArray[Any]], prefix: str,
              cfg: TinyConfig) -> NDArray[np.float64]:
    n_tokens = x.shape[0]
    hd = cfg.head_dim
    q = (x @ w[f"{prefix}.wq.weight"].T).reshape(n_tokens, cfg.n_heads, hd)
    k = (x @ w[f"{prefix}.wk.weight"].T).reshape(n_tokens, cfg.n_kv_heads, hd)
    v = (x @ w[f"{prefix}.wv.weight"].T).reshape(n_tokens, cfg.n_kv_heads, hd)
    q, k = rotary(q, cfg.rope_theta), rotary(k, cfg.rope_theta)
    group = cfg.n_heads // cfg.n_kv_heads  # query heads sharing one key/value head
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
    future = np.triu(np.ones((n_tokens, n_tokens), dtype=bool), k=1)
    scores = np.where(future[None], -np.inf, scores)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    scores /= scores.sum(axis=-1, keepdims=True)
    out = np.einsum("hqk,khd->qhd", scores, v).reshape(n_tokens, cfg.n_heads * hd)
    return out @ w[f"{prefix}.wo.weight"].T


def forward(weights: Mapping[str, NDArray[Any]], cfg: TinyConfig,
            tokens: Sequence[int]) -> NDArray[np.float64]:
    """Logits [tokens, vocab] for every position of `tokens`."""
    w = {name: np.asarray(value, dtype=np.float64) for name, value in weights.items()}
    h = w["tok_embeddings.weight"][np.asarray(tokens)]
    for i in range(cfg.n_layers):
        x = rms_norm(h, w[f"layers.{i}.attention_norm.weight"], cfg.norm_eps)
        h = h + attention(x, w, f"layers.{i}.attention", cfg)
        x = rms_norm(h, w[f"layers.{i}.ffn_norm.weight"], cfg.norm_eps)
        ff = f"layers.{i}.feed_forward"
        gate = silu(x @ w[f"{ff}.w1.weight"].T) * (x @ w[f"{ff}.w3.weight"].T)
        h = h + gate @ w[f"{ff}.w2.weight"].T
    h = rms_norm(h, w["norm.weight"], cfg.norm_eps)
    return h @ w["output.weight"].T
