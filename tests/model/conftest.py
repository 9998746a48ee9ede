"""One real engine on the demo model for the whole model-test session (loading takes a second)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.engine.llama import EngineOptions, LlamaEngine


@pytest.fixture(scope="session")
def llama_engine(demo_model: Path) -> Iterator[LlamaEngine]:
    import asyncio

    engine = LlamaEngine(EngineOptions(model_path=demo_model, n_ctx=2048, threads=2))
    yield engine
    asyncio.run(engine.aclose())
