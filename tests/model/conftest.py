"""Real engines on the demo model, loaded once per session (loading takes a second)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.engine.llama import EngineOptions, LlamaEngine
from bot.engine.pool import PoolEngine, PoolOptions
from tests.cpu import THREADS


@pytest.fixture(scope="session")
def llama_engine(demo_model: Path) -> Iterator[LlamaEngine]:
    engine = LlamaEngine(EngineOptions(model_path=demo_model, n_ctx=2048, threads=THREADS))
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(scope="session")
def pool_engine(demo_model: Path) -> Iterator[PoolEngine]:
    engine = PoolEngine(PoolOptions(model_path=demo_model, n_ctx=2048, n_slots=3, threads=THREADS))
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(params=["simple", "pool"])
def chat_engine(request: pytest.FixtureRequest) -> Any:
    """Each engine behind the chat service: the chat side must not see a difference."""
    name = "llama_engine" if request.param == "simple" else "pool_engine"
    return request.getfixturevalue(name)
