"""Fixtures for the converter tests: a sentencepiece model trained once per session, and
factories that write tiny Meta and Hugging Face checkpoints into the test's tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from numpy.typing import NDArray

from tests.models.checkpoints import (
    TinyConfig,
    random_weights,
    train_tokenizer,
    write_hf_checkpoint,
    write_meta_checkpoint,
)

Weights = dict[str, NDArray[Any]]
Checkpoint = tuple[Path, TinyConfig, Weights]


@pytest.fixture(scope="session")
def tokenizer() -> bytes:
    return train_tokenizer(vocab_size=360)


@pytest.fixture
def make_meta(tmp_path: Path, tokenizer: bytes) -> Callable[..., Checkpoint]:
    """Write a Meta checkpoint: make_meta(cfg, n_shards=2, dtype="F16", added_tokens=...)."""

    def make(cfg: TinyConfig | None = None, *, seed: int = 0, dtype: str = "F16",
             name: str = "meta", **options: Any) -> Checkpoint:
        cfg = cfg or TinyConfig()
        weights = random_weights(cfg, seed=seed, dtype=dtype)
        folder = write_meta_checkpoint(tmp_path / name, cfg, weights, tokenizer, dtype=dtype,
                                       **options)
        return folder, cfg, weights

    return make


@pytest.fixture
def make_hf(tmp_path: Path, tokenizer: bytes) -> Callable[..., Checkpoint]:
    """Write a Hugging Face checkpoint: make_hf(cfg, fmt="bin", n_files=1, dtype="F32")."""

    def make(cfg: TinyConfig | None = None, *, seed: int = 0, dtype: str = "F16",
             name: str = "hf", **options: Any) -> Checkpoint:
        cfg = cfg or TinyConfig()
        weights = random_weights(cfg, seed=seed, dtype=dtype)
        folder = write_hf_checkpoint(tmp_path / name, cfg, weights, tokenizer, dtype=dtype,
                                     **options)
        return folder, cfg, weights

    return make
