"""Fixtures starting real llama-servers with the demo model on loopback (tests/llamaserver.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.llamaserver import LlamaServer, LlamaServerError, find_llama_server

StartLlamaServer = Callable[..., LlamaServer]


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    """The llama-server to test against; not having one fails the tests, it never skips them."""
    try:
        return find_llama_server()
    except LlamaServerError as error:
        pytest.fail(str(error))


@pytest.fixture
def start_llama_server(demo_model: Path, llama_server_binary: Path) -> Iterator[StartLlamaServer]:
    """start_llama_server(**options) -> a started LlamaServer on the demo model, closed after the
    test; options are LlamaServer's (slots, ctx, threads, slot_save_path, api_key, ...)."""
    servers: list[LlamaServer] = []

    def start(**options: Any) -> LlamaServer:
        options.setdefault("binary", llama_server_binary)
        server = LlamaServer(demo_model, **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()
