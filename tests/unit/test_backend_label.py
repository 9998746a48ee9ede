"""A model server's URL may carry a password (`http://user:password@host`): it reaches the
HTTP client and nothing else: not the log, not the admins, not /settings or /model."""

from __future__ import annotations

import logging

import httpx
import pytest

from bot.engine.remote.backends import Backends
from bot.engine.remote.spec import BackendSpec

SECRET = "s3cr3t-pass"


@pytest.mark.parametrize(("url", "label"), [
    (f"http://bot:{SECRET}@10.0.0.5:8080", "http://bot:***@10.0.0.5:8080"),
    (f"https://bot:{SECRET}@[fd00::5]/llm", "https://bot:***@[fd00::5]/llm"),
    ("http://10.0.0.5:8080", "http://10.0.0.5:8080"),
])
def test_the_label_masks_a_password(url: str, label: str) -> None:
    assert BackendSpec(url=url).label == label


async def test_a_server_going_down_is_told_without_its_password(
        caplog: pytest.LogCaptureFixture) -> None:
    told: list[str] = []

    async def listener(status) -> None:  # type: ignore[no-untyped-def]
        told.append(status.url)

    async with httpx.AsyncClient() as client:
        backends = Backends((BackendSpec(url=f"http://bot:{SECRET}@127.0.0.1:9"),), client,
                            patrol=60.0, on_change=lambda: None)
        backends.add_listener(listener)
        backend = backends.all[0]
        backend.up = True
        with caplog.at_level(logging.INFO):
            await backends.down(backend, "connection refused")
        lines = backends.describe()
        served = backends.served_models()
        await backends.aclose()
    shown = " ".join([*lines, *told, caplog.text, repr(served)])
    assert "127.0.0.1:9" in shown and SECRET not in shown
