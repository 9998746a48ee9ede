"""HTTP to the inference servers: JSON calls and Server-Sent Event streams over one httpx
client, with transport failures and 5xx answers turned into `BackendDown`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bot.errors import BackendDown, BackendError


def error_text(response: httpx.Response) -> str:
    """The message of an error answer (llama-server and OpenAI: {"error": {"message": ...}})."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error)[:300]
        return str(error)[:300]
    return str(body)[:300]


def _check(response: httpx.Response, what: str) -> None:
    # 501 is a server saying it lacks a feature (llama-server's slot actions without
    # --slot-save-path), not a server in trouble.
    if response.status_code >= 500 and response.status_code != 501:
        raise BackendDown(f"{what}: HTTP {response.status_code}: {error_text(response)}")
    if response.status_code >= 400:
        raise BackendError(f"{what}: HTTP {response.status_code}: {error_text(response)}")


CALLS_AT_ONCE = 4
"""Short calls (tokenize, health, slot files) in flight to one server at once: a chat's long
history tokenized segment by segment must not open a connection per segment. Replies are
bounded by the server's slots instead."""


class ServerConnection:
    """One server's base URL and API key on a shared client."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, api_key: str | None) -> None:
        self._client = client
        self.base_url = base_url
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._calls = asyncio.Semaphore(CALLS_AT_ONCE)

    async def get(self, path: str, *, wait: float | None = None) -> Any:
        async with self._calls:
            return await self._get(path, wait)

    async def post(self, path: str, body: dict[str, Any], *, wait: float | None = None) -> Any:
        async with self._calls:
            return await self._post(path, body, wait)

    async def _get(self, path: str, wait: float | None) -> Any:
        try:
            response = await self._client.get(
                self.base_url + path, headers=self._headers,
                timeout=wait if wait is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as exc:
            raise BackendDown(f"GET {path}: {_describe(exc)}") from exc
        _check(response, f"GET {path}")
        return response.json()

    async def _post(self, path: str, body: dict[str, Any], wait: float | None) -> Any:
        try:
            response = await self._client.post(
                self.base_url + path, json=body, headers=self._headers,
                timeout=wait if wait is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as exc:
            raise BackendDown(f"POST {path}: {_describe(exc)}") from exc
        _check(response, f"POST {path}")
        return response.json()

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST `body` and yield each event's JSON data up to the end of the stream.

        Leaving the iteration early closes the connection, which a server takes as the
        client going away (llama-server then stops generating)."""
        try:
            # llama-server closes the connection after every streamed answer while its headers
            # say keep-alive: a pooled connection reused after a stream then fails about one
            # time in four ("server disconnected"), which would count the server as down.
            headers = {**self._headers, "Connection": "close"}
            async with aconnect_sse(
                self._client, "POST", self.base_url + path, json=body, headers=headers
            ) as source:
                response = source.response
                if response.status_code >= 400:
                    await response.aread()
                    _check(response, f"POST {path}")
                async for event in source.aiter_sse():
                    if not event.data or event.data == "[DONE]":
                        continue
                    try:
                        data = json.loads(event.data)
                    except ValueError as exc:
                        raise BackendDown(f"POST {path}: unreadable event {event.data[:80]!r}") from exc
                    if isinstance(data, dict) and "error" in data:
                        error = data["error"]
                        message = error.get("message") if isinstance(error, dict) else error
                        code = error.get("code", 0) if isinstance(error, dict) else 0
                        kind = BackendDown if isinstance(code, int) and code >= 500 else BackendError
                        raise kind(f"POST {path}: {message}")
                    yield data
        except httpx.TransportError as exc:
            raise BackendDown(f"POST {path}: {_describe(exc)}") from exc


def _describe(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return f"connection refused or unreachable ({exc})"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
