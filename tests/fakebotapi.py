"""A loopback fake of the Telegram Bot API for end-to-end tests.

A real HTTP server on 127.0.0.1 speaking Telegram's wire format, so the real bot (python-telegram-bot
with ``base_url`` pointed here) runs unchanged while tests drive chats and assert on what it sent.
Updates reach the bot by getUpdates or, once it set a webhook, as Telegram's POSTs to that URL.
"""

from __future__ import annotations

import asyncio
import copy
import email.parser
import email.policy
import http.client
import io
import json
import math
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_TEXT_UTF16 = 4096
MAX_CAPTION_UTF16 = 1024
MAX_PHOTO_BYTES = 10 << 20
MAX_DOWNLOAD_BYTES = 20 << 20
"""The largest file a bot may download from the cloud Bot API (getFile refuses larger ones)."""
FILE_TOO_BIG = "Bad Request: file is too big"
MAX_POLL_TIMEOUT = 50.0
GROUP_MESSAGES_PER_MINUTE = 20
"""Telegram's limit on the messages a bot posts in one group (its FAQ): 20 a minute."""
_POSTING = frozenset(method.lower() for method in (
    "sendMessage", "sendPhoto", "sendDocument", "sendVideo", "sendAudio", "sendVoice",
    "sendAnimation", "sendSticker", "sendMediaGroup", "sendPoll", "sendDice", "sendLocation",
    "sendContact", "sendVenue", "copyMessage", "forwardMessage",
))
"""The methods that post a new message (what the group limit counts; edits do not)."""
WEBHOOK_RETRY_DELAY = 0.1  # Telegram backs off for longer; tests want a quick second try
WEBHOOK_PORTS = (80, 88, 443, 8443)
# Telegram's own texts (telegram-bot-api's Client.cpp and WebhookActor.cpp).
HTTPS_REQUIRED = "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
WEBHOOK_PORT_FORBIDDEN = "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443"
WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
DRAFT_PEER_INVALID = "Bad Request: TEXTDRAFT_PEER_INVALID"
"""What Telegram answers a draft outside a private chat."""
MAX_CALLBACK_ANSWER = 200
MAX_CALLBACK_DATA_BYTES = 64
CALLBACK_TIMEOUT = 15.0
"""Seconds a callback query can be answered in (the client stops waiting after that)."""
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
DEFAULT_FAILURE_TEXT = {
    400: "Bad Request: injected failure",
    403: "Forbidden: bot was blocked by the user",
    409: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
    500: "Internal Server Error",
}
# Parameters Telegram treats as plain strings; every other form value is JSON text.
_STRING_PARAMS = frozenset(
    "text parse_mode caption action url secret_token callback_query_id language_code title "
    "description short_description inline_message_id emoji custom_title name".split()
)


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit of Telegram's entity offsets and limits."""
    return len(text.encode("utf-16-le")) // 2


class EntityParseError(ValueError):
    """Text that Telegram would reject with "can't parse entities"."""


def _byte_offset(src: str, index: int) -> int:
    return len(src[:index].encode())


class _TextBuilder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0  # in UTF-16 units
        self.entities: list[dict[str, Any]] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.pos += utf16_len(text)

    def close(self, entity: dict[str, Any] | None, start: int) -> None:
        if entity is not None and self.pos > start:
            self.entities.append({**entity, "offset": start, "length": self.pos - start})

    def result(self) -> tuple[str, list[dict[str, Any]]]:
        return "".join(self.parts), sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))


# --- parse_mode=HTML ---------------------------------------------------------------------------

_HTML_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z]+);")
_HTML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_START = re.compile(r"<([A-Za-z][A-Za-z0-9-]*)")
_HTML_END = re.compile(r"</([A-Za-z][A-Za-z0-9-]*)\s*>")
_HTML_ATTR = re.compile(r"""\s+([A-Za-z-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?""")
_HTML_TAG_CLOSE = re.compile(r"\s*>")
_HTML_SIMPLE = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
    "pre": "pre",
}
_HTML_TAGS = {*_HTML_SIMPLE, "a", "blockquote", "tg-emoji"}


def _html_entity(name: str) -> str | None:
    if name.startswith(("#x", "#X")):
        code = int(name[2:], 16)
    elif name.startswith("#"):
        code = int(name[1:])
    else:
        return _HTML_NAMED.get(name)
    return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else None


def _html_unescape_attr(value: str) -> str:
    return _HTML_ENTITY.sub(lambda m: _html_entity(m.group(1)) or m.group(0), value)


def parse_html(src: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's parse_mode=HTML: the plain text and its entities (UTF-16 offsets).

    Stricter than Telegram in one respect: an unknown ``&name;`` is an error (Telegram keeps it
    as text), so a bot that forgets to escape ``&`` is caught.
    """
    out = _TextBuilder()
    stack: list[tuple[str, int, dict[str, Any] | None]] = []  # (tag, start, entity)
    i = 0
    while i < len(src):
        char = src[i]
        if char == "&":
            match = _HTML_ENTITY.match(src, i)
            decoded = _html_entity(match.group(1)) if match else None
            if match is None or decoded is None:
                raise EntityParseError(
                    f"Unsupported HTML entity at byte offset {_byte_offset(src, i)}"
                )
            out.add(decoded)
            i = match.end()
        elif char != "<":
            stops = [j for j in (src.find("<", i), src.find("&", i)) if j != -1]
            end = min(stops) if stops else len(src)
            out.add(src[i:end])
            i = end
        elif src.startswith("</", i):
            match = _HTML_END.match(src, i)
            if match is None:
                raise EntityParseError(f"Unclosed end tag at byte offset {_byte_offset(src, i)}")
            name = match.group(1).lower()
            if not stack:
                raise EntityParseError(f"Unexpected end tag at byte offset {_byte_offset(src, i)}")
            tag, start, entity = stack.pop()
            if name != tag:
                raise EntityParseError(
                    f'Unmatched end tag at byte offset {_byte_offset(src, i)}, expected "</{tag}>", '
                    f'found "</{name}>"'
                )
            out.close(entity, start)
            i = match.end()
        else:
            match = _HTML_START.match(src, i)
            name = match.group(1).lower() if match else ""
            attrs: dict[str, str] = {}
            j = match.end() if match else i + 1
            while match and (attr := _HTML_ATTR.match(src, j)):
                value = next((v for v in attr.group(2, 3, 4) if v is not None), "")
                attrs[attr.group(1).lower()] = _html_unescape_attr(value)
                j = attr.end()
            if name not in _HTML_TAGS or (name == "span" and attrs.get("class") != "tg-spoiler"):
                raise EntityParseError(
                    f'Unsupported start tag "{name}" at byte offset {_byte_offset(src, i)}'
                )
            closing = _HTML_TAG_CLOSE.match(src, j)
            if closing is None:
                raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(src, i)}")
            stack.append((name, out.pos, _html_tag_entity(name, attrs, stack)))
            i = closing.end()
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return out.result()


def _html_tag_entity(
    name: str, attrs: dict[str, str], stack: list[tuple[str, int, dict[str, Any] | None]]
) -> dict[str, Any] | None:
    if name == "code" and stack and stack[-1][0] == "pre":
        # <pre><code class="language-x"> is one pre entity carrying the language.
        pre = stack[-1][2]
        css = attrs.get("class", "")
        if pre is not None and css.startswith("language-"):
            pre["language"] = css.removeprefix("language-")
        return None
    if name == "a":
        href = attrs.get("href")
        if not href:
            return None
        if m := re.fullmatch(r"tg://user\?id=(\d+)", href):
            return {
                "type": "text_mention",
                "user": {"id": int(m.group(1)), "is_bot": False, "first_name": ""},
            }
        return {"type": "text_link", "url": href}
    if name == "blockquote":
        return {"type": "expandable_blockquote" if "expandable" in attrs else "blockquote"}
    if name == "tg-emoji":
        emoji_id = attrs.get("emoji-id")
        return {"type": "custom_emoji", "custom_emoji_id": emoji_id} if emoji_id else None
    return {"type": _HTML_SIMPLE[name]}


# --- parse_mode=MarkdownV2 / Markdown ----------------------------------------------------------

_MD_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MD_TOGGLES = {"*": "bold", "_": "italic", "__": "underline", "~": "strikethrough", "||": "spoiler"}


def parse_markdown(src: str, *, v2: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's MarkdownV2 (or legacy Markdown with ``v2=False``): the common constructs and,
    for V2, the rule that reserved characters must be escaped."""
    out = _TextBuilder()
    stack: list[tuple[str, int, int]] = []  # (marker, start, source index)

    def unclosed(index: int) -> EntityParseError:
        return EntityParseError(
            f"Can't find end of the entity starting at byte offset {_byte_offset(src, index)}"
        )

    def read_until(start: int, end_marker: str) -> tuple[str, int]:
        chars, k = [], start
        while k < len(src):
            if src[k] == "\\" and k + 1 < len(src):
                chars.append(src[k + 1])
                k += 2
            elif src.startswith(end_marker, k):
                return "".join(chars), k + len(end_marker)
            else:
                chars.append(src[k])
                k += 1
        raise unclosed(start - 1)

    i, line_start = 0, True
    while i < len(src):
        char = src[i]
        if char == "\\" and i + 1 < len(src) and ord(src[i + 1]) < 127:
            out.add(src[i + 1])
            i += 2
        elif src.startswith("```", i):
            body, after = read_until(i + 3, "```")
            lang, newline, rest = body.partition("\n")
            entity: dict[str, Any] = {"type": "pre"}
            if newline and lang.strip() and " " not in lang.strip():
                entity["language"], body = lang.strip(), rest
            start = out.pos
            out.add(body)
            out.close(entity, start)
            i = after
        elif char == "`":
            body, after = read_until(i + 1, "`")
            start = out.pos
            out.add(body)
            out.close({"type": "code"}, start)
            i = after
        elif char in "*_~|" and (v2 or char in "*_"):
            marker = src[i : i + 2] if v2 and src.startswith(("__", "||"), i) else char
            if marker == "|":
                raise EntityParseError(
                    "Character '|' is reserved and must be escaped with the preceding '\\'"
                )
            if stack and stack[-1][0] == marker:
                _, start, _ = stack.pop()
                out.close({"type": _MD_TOGGLES[marker]}, start)
            elif any(m == marker for m, _, _ in stack):
                raise unclosed(stack[-1][2])
            else:
                stack.append((marker, out.pos, i))
            i += len(marker)
        elif char == "[":
            stack.append(("[", out.pos, i))
            i += 1
        elif char == "]" and stack and stack[-1][0] == "[" and src.startswith("(", i + 1):
            url, after = read_until(i + 2, ")")
            _, start, _ = stack.pop()
            out.close({"type": "text_link", "url": url}, start)
            i = after
        elif v2 and char == ">" and line_start:
            if not (stack and stack[-1][0] == ">"):
                stack.append((">", out.pos, i))
            i += 1
        else:
            if char == "\n" and stack and stack[-1][0] == ">" and not src.startswith(">", i + 1):
                _, start, _ = stack.pop()
                out.close({"type": "blockquote"}, start)
            if v2 and char in _MD_RESERVED:
                raise EntityParseError(
                    f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
                )
            out.add(char)
            i += 1
        line_start = i > 0 and src[i - 1] == "\n"
    if stack and stack[-1][0] == ">":
        _, start, _ = stack.pop()
        out.close({"type": "blockquote"}, start)
    if stack:
        raise unclosed(stack[-1][2])
    return out.result()


def detect_entities(text: str) -> list[dict[str, Any]]:
    """Entities a Telegram client attaches to typed text: a leading /command and @mentions."""
    entities = []
    if command := re.match(r"/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?", text):
        entities.append({"type": "bot_command", "offset": 0, "length": utf16_len(command.group())})
    for mention in re.finditer(r"(?<![\w@/])@[A-Za-z][A-Za-z0-9_]{3,31}\b", text):
        offset = utf16_len(text[: mention.start()])
        entities.append({"type": "mention", "offset": offset, "length": utf16_len(mention.group())})
    return entities


def _strip_text(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Telegram trims leading and trailing whitespace of a message; entities follow the text."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    shift = utf16_len(text[: len(text) - len(text.lstrip())])
    size = utf16_len(stripped)
    kept = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, size)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept


# --- recorded state -------------------------------------------------------------------------------


@dataclass
class StoredMessage:
    """A message as the fake keeps it: current text after edits, plus what the bot asked for."""

    chat_id: int
    message_id: int
    from_user: dict[str, Any]
    text: str
    entities: list[dict[str, Any]]
    date: int
    thread_id: int | None = None
    reply_to_message_id: int | None = None
    parse_mode: str | None = None
    reply_markup: dict[str, Any] | None = None
    edit_count: int = 0
    edit_date: int | None = None
    history: list[str] = field(default_factory=list)  # earlier texts, oldest first
    photo: list[dict[str, Any]] | None = None
    """A photo's sizes (sendPhoto); its caption is then `text`, with `entities`."""
    media: dict[str, Any] | None = None
    """What a user sent besides text, by its field in Telegram's Message (``{"voice": {...}}``,
    ``audio``, ``video_note``); its caption is then `text`, with `entities`."""
    quote: dict[str, Any] | None = None
    """The part of the replied message a reply quotes (Telegram's TextQuote)."""
    forward_origin: dict[str, Any] | None = None
    """Where a forwarded message came from (Telegram's MessageOrigin)."""

    @property
    def from_bot(self) -> bool:
        return bool(self.from_user.get("is_bot"))


@dataclass
class ApiRequest:
    """One HTTP call the bot made: method, decoded params, monotonic arrival time, outcome."""

    method: str
    params: dict[str, Any]
    at: float
    chat_id: int | str | None
    status: int | None = None  # HTTP status once answered
    description: str | None = None  # error text for failures


@dataclass
class CallbackQueryRecord:
    """A button press the fake delivered, and how (if) the bot answered it."""

    query_id: str
    chat_id: int
    message_id: int
    user_id: int
    data: str
    at: float
    answered: bool = False
    text: str | None = None
    show_alert: bool = False


@dataclass(frozen=True)
class Violation:
    """A request to a chat made while a retry_after ban on that chat was still running."""

    request: ApiRequest
    early_by: float  # seconds before the ban ended


@dataclass(frozen=True)
class _StoredFile:
    """A file users sent, as getFile describes it; `size` may claim more than `data` holds (a
    file past the download limit without its bytes)."""

    file_id: str
    file_unique_id: str
    path: str
    size: int
    data: bytes


@dataclass
class _Chat:
    info: dict[str, Any]
    messages: list[StoredMessage] = field(default_factory=list)
    next_message_id: int = 1
    admins: set[int] = field(default_factory=set)
    creator: int | None = None
    members: set[int] = field(default_factory=set)
    bot_status: str = "member"
    """The bot's own status here: "member", "administrator", or "left"/"kicked" once out."""


@dataclass(frozen=True)
class WebhookDelivery:
    """One POST of an update to the bot's webhook: the HTTP status, or None and why not."""

    update_id: int
    status: int | None
    at: float
    error: str | None = None


@dataclass
class _Webhook:
    url: str
    secret: str
    max_connections: int
    last_error_date: int | None = None
    last_error_message: str | None = None


def post_update(
    url: str, update: dict[str, Any], secret: str | None, *, timeout: float = 10.0
) -> tuple[int | None, str]:
    """POST an update the way Telegram delivers it: JSON, the secret in a header.

    Returns (HTTP status, reason), or (None, the error) when nothing answered. http.client, not
    urllib, so no proxy from the environment gets between the fake and the bot.
    """
    parts = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=json.dumps(update).encode(), headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, response.reason
    except OSError as exc:
        return None, exc.strerror or str(exc)
    finally:
        connection.close()


@dataclass
class _Failure:
    method: str
    error_code: int
    description: str
    retry_after: int | None
    times: int
    chat_id: int | str | None


class _ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.retry_after = code, description, retry_after


def _bad(text: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {text}")


def _chat_key(value: Any) -> int | str | None:
    if isinstance(value, dict):
        return value["id"]
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def _decode_value(name: str, value: Any) -> Any:
    if name in _STRING_PARAMS or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


class _Upload(dict[str, Any]):
    """A file part of a multipart request: compares as ``{"filename", "size"}``; ``data`` keeps
    its bytes (for the methods that look at them, like sendPhoto)."""

    def __init__(self, filename: str, data: bytes) -> None:
        super().__init__(filename=filename, size=len(data))
        self.data = data


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG or JPEG, or None if the bytes are neither."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data) and data[i] == 0xFF:
            marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2):
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            i += 2 + length
    return None


def _decode_body(content_type: str, body: bytes, query: str) -> dict[str, Any]:
    raw: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json" and body:
        raw.update(json.loads(body))
    elif kind == "multipart/form-data":
        header = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
        for part in message.iter_parts():
            name = str(part.get_param("name", header="content-disposition"))
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            filename = part.get_filename()
            raw[name] = _Upload(filename, data) if filename else data.decode()
    elif body:
        raw.update(parse_qsl(body.decode(), keep_blank_values=True))
    return {name: _decode_value(name, value) for name, value in raw.items()}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        if path.startswith("/file/"):
            status, content = self.server.fake.download(path)
            self._answer(status, content, "application/octet-stream")
            return
        try:
            status, payload = self.server.fake.handle(
                path, self.headers.get("Content-Type", ""), body, query
            )
        except Exception as exc:  # a bug in the fake: make it visible to the client, not a hang
            status, payload = (
                500,
                {"ok": False, "error_code": 500, "description": f"FakeBotAPI crashed: {exc!r}"},
            )
        self._answer(status, json.dumps(payload).encode(), "application/json")

    def _answer(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeBotAPI) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        self.connections: set[socket.socket] = set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up mid-poll (a cancelled getUpdates) are normal here


# --- the fake --------------------------------------------------------------------------------------


class FakeBotAPI:
    """The Bot API on loopback: ``with FakeBotAPI() as fake:`` then point the bot at
    ``f"{fake.base_url}/bot"`` and drive it with :meth:`send_text`."""

    def __init__(
        self,
        *,
        token: str = "7000000001:AAFakeTokenForAlpacaBotTests_0123456789",
        bot_username: str = "alpaca_test_bot",
        bot_first_name: str = "Alpaca",
    ) -> None:
        self.token = token
        self.bot_id = int(token.split(":")[0])
        self.bot_username = bot_username
        self.bot_user = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._users: dict[int, dict[str, Any]] = {}
        self._chats: dict[int, _Chat] = {}
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 100_000
        self._allowed_updates: set[str] | None = None
        self._poll_generation = 0
        self._requests: list[ApiRequest] = []
        self._failures: list[_Failure] = []
        self._bans: dict[int | str, float] = {}
        self._violations: list[Violation] = []
        self._flood_interval: float | None = None
        self._flood_methods: frozenset[str] = frozenset()
        self._last_send: dict[int | str, float] = {}
        self._group_limit: int | None = GROUP_MESSAGES_PER_MINUTE
        self._group_window = 60.0
        self._group_posts: dict[int | str, deque[float]] = {}
        self._drafts: list[tuple[int, int, str]] = []
        self._files: dict[str, bytes] = {}
        self._sent_files: dict[str, _StoredFile] = {}
        """Files users sent (voice notes, audio, ...), by file_id: what getFile serves."""
        self._downloads: list[str] = []
        self._queries: dict[str, CallbackQueryRecord] = {}
        self.callback_timeout = CALLBACK_TIMEOUT
        self._commands: dict[str, list[dict[str, Any]]] = {}
        self._webhook: _Webhook | None = None
        self._next_set_webhook = 0.0
        self.set_webhook_interval = 1.0
        """Telegram takes one setWebhook a second; tests of other rules may lower it."""
        self._deliveries: list[WebhookDelivery] = []
        self._delivery_thread: threading.Thread | None = None
        self._stopping = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._api = {
            name[5:].lower(): getattr(self, name) for name in dir(self) if name.startswith("_api_")
        }

    # lifecycle

    def start(self) -> FakeBotAPI:
        self._stopping = False
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="FakeBotAPI",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; long polls in progress return at once."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is None:
            return
        self._server.shutdown()
        for conn in list(self._server.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._delivery_thread is not None:
            self._delivery_thread.join(timeout=15)
        self._server = None

    def __enter__(self) -> FakeBotAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeBotAPI is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # test side: the world

    def user(
        self, first_name: str = "Alice", username: str | None = None, *, id: int | None = None,
        language_code: str | None = None,
    ) -> dict[str, Any]:
        """A person; `language_code` (IETF tag, optional as in Telegram's User) is their app's."""
        with self._lock:
            user_id = id if id is not None else 1001 + len(self._users)
            user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
            if username:
                user["username"] = username
            if language_code:
                user["language_code"] = language_code
            self._users[user_id] = user
            return dict(user)

    def private_chat(self, user: dict[str, Any]) -> dict[str, Any]:
        info = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        if "username" in user:
            info["username"] = user["username"]
        with self._lock:
            self._users.setdefault(user["id"], dict(user))
            chat = self._chats.setdefault(user["id"], _Chat(info=info))
            chat.members.add(user["id"])
            return dict(chat.info)

    def group_chat(self, title: str = "Test group", forum: bool = False) -> dict[str, Any]:
        with self._lock:
            chat_id = -1_001_000_000_001 - len(self._chats)
            info: dict[str, Any] = {"id": chat_id, "type": "supergroup", "title": title}
            if forum:
                info["is_forum"] = True
            self._chats[chat_id] = _Chat(info=info)
            return dict(info)

    def set_admins(
        self, chat: dict[str, Any] | int, user_ids: Iterable[int], *, creator: int | None = None
    ) -> None:
        """Make these users (the bot's id allowed) administrators; ``creator`` owns the chat."""
        with self._lock:
            state = self._chat_state(chat)
            state.admins = set(user_ids) - {creator}
            state.creator = creator
            state.members |= state.admins | ({creator} if creator else set())

    def add_bot(
        self, chat: dict[str, Any] | int, by: dict[str, Any], *, status: str = "member"
    ) -> int:
        """``by`` adds the bot to a group (as a member or an administrator): Telegram's
        ``my_chat_member`` update, ``from`` being who did it. Returns its update_id."""
        with self._cond:
            state = self._chat_state(chat)
            self._users.setdefault(by["id"], dict(by))
            state.members.add(by["id"])
            old, state.bot_status = state.bot_status, status
            if old not in ("left", "kicked"):
                old = "left"  # a group made with group_chat() has the bot already
            return self._queue({"my_chat_member": self._member_change(state, by, old, status)})

    def remove_bot(self, chat: dict[str, Any] | int, by: dict[str, Any]) -> int:
        """``by`` removes the bot from a group (``my_chat_member``: it is "kicked")."""
        with self._cond:
            state = self._chat_state(chat)
            old, state.bot_status = state.bot_status, "kicked"
            return self._queue({"my_chat_member": self._member_change(state, by, old, "kicked")})

    def bot_in(self, chat: dict[str, Any] | int) -> bool:
        """Whether the bot is (still) in this chat: not left (leaveChat) nor removed."""
        with self._lock:
            return self._chat_state(chat).bot_status not in ("left", "kicked")

    def _member_change(
        self, chat: _Chat, by: dict[str, Any], old: str, new: str
    ) -> dict[str, Any]:
        """A ChatMemberUpdated of the bot (lock held)."""

        def member(status: str) -> dict[str, Any]:
            if status == "administrator":
                return {**self._admin_rights(), "status": status, "user": dict(self.bot_user)}
            extra = {"until_date": 0} if status == "kicked" else {}
            return {"status": status, "user": dict(self.bot_user), **extra}

        return {
            "chat": dict(chat.info), "from": dict(by), "date": int(time.time()),
            "old_chat_member": member(old), "new_chat_member": member(new),
        }

    def send_text(
        self,
        chat: dict[str, Any] | int,
        user: dict[str, Any],
        text: str,
        reply_to: int | dict[str, Any] | None = None,
        thread_id: int | None = None,
        entities: list[dict[str, Any]] | None = None,
        *,
        quote: str | None = None,
        forward_origin: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A user writes ``text`` in ``chat``; queues the update and returns its Message dict.

        Entities default to what a client adds: a leading /command and @mentions. With a webhook
        set, the update is POSTed to it (see :meth:`deliveries`) instead of waiting for getUpdates.
        ``quote``: the part of the replied message the reply quotes (it must be in its text or
        caption); ``forward_origin``: the message is forwarded (see :meth:`origin`).
        """
        with self._cond:
            state = self._chat_state(chat)
            self._users.setdefault(user["id"], dict(user))
            state.members.add(user["id"])
            reply_id = reply_to["message_id"] if isinstance(reply_to, dict) else reply_to
            if reply_id is not None and self._find(state, reply_id) is None:
                raise ValueError(f"no message {reply_id} in chat {state.info['id']}")
            if thread_id is None and reply_id is not None:
                thread_id = self._find(state, reply_id).thread_id  # type: ignore[union-attr]
            message = self._store(
                state,
                dict(user),
                text,
                detect_entities(text) if entities is None else entities,
                thread_id=thread_id,
                reply_to=reply_id,
            )
            if quote is not None:
                message.quote = self._quote(state, reply_id, quote)
            message.forward_origin = copy.deepcopy(forward_origin)
            payload = self._message_json(state, message)
            self._queue({"message": payload})
            return copy.deepcopy(payload)

    def _quote(self, chat: _Chat, reply_id: int | None, text: str) -> dict[str, Any]:
        """Telegram's TextQuote of `text` in the replied message (lock held)."""
        target = self._find(chat, reply_id) if reply_id is not None else None
        if target is None or text not in target.text:
            raise ValueError(f"a quote must be a part of the replied message: {text!r}")
        return {"text": text, "position": utf16_len(target.text[: target.text.index(text)]),
                "is_manual": True}

    @staticmethod
    def origin(source: dict[str, Any], *, date: int | None = None,
               message_id: int | None = None) -> dict[str, Any]:
        """The MessageOrigin of a message forwarded from `source`: a user (``user``), a
        channel's post (a chat of type ``channel``, with `message_id`), another chat's
        (``chat``), or a user who hides their account (``{"hidden": "Name"}``)."""
        when = int(time.time()) - 3600 if date is None else date
        if "hidden" in source:
            return {"type": "hidden_user", "date": when, "sender_user_name": source["hidden"]}
        if source.get("type") == "channel":
            return {"type": "channel", "date": when, "chat": dict(source),
                    "message_id": message_id or 1}
        if "type" in source:
            return {"type": "chat", "date": when, "sender_chat": dict(source)}
        return {"type": "user", "date": when, "sender_user": dict(source)}

    def send_photo(
        self, chat: dict[str, Any] | int, user: dict[str, Any], data: bytes, *,
        caption: str | None = None, **message: Any,
    ) -> dict[str, Any]:
        """A photo as Telegram delivers one: re-encoded as JPEG in several sizes (the longest
        side 90, 320, 800 and 1280 pixels, as far as the picture reaches), smallest first, each
        a file to download; the rest as :meth:`send_media`."""
        from PIL import Image

        original = Image.open(io.BytesIO(data)).convert("RGB")
        sizes = []
        for side in (90, 320, 800, 1280):
            if sizes and max(original.size) <= side // 2:
                break
            scaled = original.copy()
            scaled.thumbnail((side, side))
            out = io.BytesIO()
            scaled.save(out, "JPEG", quality=87)
            stored = self.add_file(out.getvalue(), folder="photos", extension="jpg",
                                   prefix="AgACAgIAAxkBAAI")
            sizes.append({**stored, "width": scaled.width, "height": scaled.height})
        return self.send_media(chat, user, "photo", sizes, caption=caption, **message)

    def send_document(
        self, chat: dict[str, Any] | int, user: dict[str, Any], data: bytes, *,
        file_name: str, mime_type: str | None = None, size: int | None = None,
        caption: str | None = None, **message: Any,
    ) -> dict[str, Any]:
        """A file sent as a document (`size` may claim more than `data`: a file past the
        download limit); the rest as :meth:`send_media`."""
        extension = file_name.rpartition(".")[2] if "." in file_name else "bin"
        stored = self.add_file(data, folder="documents", extension=extension, size=size)
        document: dict[str, Any] = {**stored, "file_name": file_name}
        if mime_type:
            document["mime_type"] = mime_type
        return self.send_media(chat, user, "document", document, caption=caption, **message)

    def add_file(
        self, data: bytes, *, folder: str, extension: str, prefix: str = "BQACAgIAAxkBAAI",
        size: int | None = None,
    ) -> dict[str, Any]:
        """A file someone sent, kept for getFile and downloads at ``{folder}/file_N.{extension}``
        (Telegram's layout: ``voice``, ``music``, ``video_notes``, ``documents``, ``photos``).
        `size` may claim more than `data` holds (a file past the download limit). Returns the
        fields every file object has: ``file_id``, ``file_unique_id``, ``file_size``."""
        with self._lock:
            number = len(self._sent_files) + 1
            stored = _StoredFile(
                file_id=f"{prefix}{number:08d}", file_unique_id=f"AgAD{number:08d}",
                path=f"{folder}/file_{number}.{extension}",
                size=len(data) if size is None else size, data=data,
            )
            self._sent_files[stored.file_id] = stored
            return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                    "file_size": stored.size}

    def send_voice(
        self, chat: dict[str, Any] | int, user: dict[str, Any], data: bytes, *, duration: int,
        size: int | None = None, mime_type: str = "audio/ogg", **message: Any,
    ) -> dict[str, Any]:
        """A voice note (OGG/Opus, as Telegram's apps record them) of `duration` seconds; the
        rest as :meth:`send_media`."""
        voice = self.add_file(data, folder="voice", extension="oga", prefix="AwACAgIAAxkBAAI",
                              size=size)
        return self.send_media(chat, user, "voice", {**voice, "duration": duration,
                                                     "mime_type": mime_type}, **message)

    def send_audio(
        self, chat: dict[str, Any] | int, user: dict[str, Any], data: bytes, *, duration: int,
        file_name: str = "audio.mp3", mime_type: str = "audio/mpeg", title: str | None = None,
        performer: str | None = None, size: int | None = None, **message: Any,
    ) -> dict[str, Any]:
        """An audio file (shown as music) of `duration` seconds; the rest as :meth:`send_media`."""
        extension = file_name.rpartition(".")[2] or "mp3"
        audio = self.add_file(data, folder="music", extension=extension,
                              prefix="CQACAgIAAxkBAAI", size=size)
        fields: dict[str, Any] = {**audio, "duration": duration, "file_name": file_name,
                                  "mime_type": mime_type}
        fields.update({k: v for k, v in (("title", title), ("performer", performer)) if v})
        return self.send_media(chat, user, "audio", fields, **message)

    def send_video_note(
        self, chat: dict[str, Any] | int, user: dict[str, Any], data: bytes, *, duration: int,
        length: int = 384, size: int | None = None, **message: Any,
    ) -> dict[str, Any]:
        """A round video message (MP4) of `duration` seconds and `length` pixels across."""
        note = self.add_file(data, folder="video_notes", extension="mp4",
                             prefix="DQACAgIAAxkBAAI", size=size)
        return self.send_media(chat, user, "video_note",
                               {**note, "duration": duration, "length": length}, **message)

    def send_media(
        self,
        chat: dict[str, Any] | int,
        user: dict[str, Any],
        field: str,
        media: dict[str, Any] | list[dict[str, Any]],
        *,
        caption: str | None = None,
        reply_to: int | dict[str, Any] | None = None,
        thread_id: int | None = None,
        caption_entities: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A user sends a message whose `field` (``voice``, ``audio``, ``video_note``, ...) is
        `media`, with an optional caption (its entities default to what a client adds);
        queues the update and returns its Message dict."""
        with self._cond:
            state = self._chat_state(chat)
            self._users.setdefault(user["id"], dict(user))
            state.members.add(user["id"])
            reply_id = reply_to["message_id"] if isinstance(reply_to, dict) else reply_to
            if reply_id is not None and self._find(state, reply_id) is None:
                raise ValueError(f"no message {reply_id} in chat {state.info['id']}")
            if thread_id is None and reply_id is not None:
                thread_id = self._find(state, reply_id).thread_id  # type: ignore[union-attr]
            text = caption or ""
            entities = detect_entities(text) if caption_entities is None else caption_entities
            message = self._store(state, dict(user), text, entities, thread_id=thread_id,
                                  reply_to=reply_id)
            message.media = {field: copy.deepcopy(media)}
            payload = self._message_json(state, message)
            self._queue({"message": payload})
            return copy.deepcopy(payload)

    def forged_update(
        self, chat: dict[str, Any] | int, user: dict[str, Any], text: str
    ) -> dict[str, Any]:
        """A message update that looks real but that Telegram never sent: not stored, not queued.

        For :meth:`post_to_webhook` with a wrong secret.
        """
        with self._lock:
            state = self._chat_state(chat)
            message = StoredMessage(
                chat_id=state.info["id"], message_id=state.next_message_id, from_user=dict(user),
                text=text, entities=detect_entities(text), date=int(time.time()),
            )
            state.next_message_id += 1
            update_id = self._next_update_id
            self._next_update_id += 1
            return {"update_id": update_id, "message": self._message_json(state, message)}

    def post_to_webhook(
        self, update: dict[str, Any], *, secret: str | None, url: str | None = None
    ) -> int | None:
        """POST ``update`` to the webhook (or ``url``) as anyone on the network could, with this
        secret header (None: none); returns the HTTP status (None: no answer).

        It blocks: a test on the bot's event loop calls it through ``asyncio.to_thread``.
        """
        with self._lock:
            target = url or (self._webhook.url if self._webhook is not None else None)
        if target is None:
            raise RuntimeError("no webhook is set and no url given")
        status, _ = post_update(target, update, secret)
        return status

    def press(
        self, message: StoredMessage | dict[str, Any], button_text: str, user: dict[str, Any]
    ) -> str:
        """``user`` presses the inline button labelled ``button_text`` under the bot's message
        (as it is now); queues the callback_query update and returns the query's id."""
        with self._lock:
            stored = self._stored(message)
            rows = (stored.reply_markup or {}).get("inline_keyboard") or []
            labels = [button.get("text") for row in rows for button in row]
            button = next((b for row in rows for b in row if b.get("text") == button_text), None)
            if button is None or "callback_data" not in button:
                raise ValueError(
                    f"message {stored.message_id} has no button {button_text!r}: {labels}"
                )
        return self.push_callback(stored, button["callback_data"], user)

    def push_callback(
        self, message: StoredMessage | dict[str, Any], data: str, user: dict[str, Any]
    ) -> str:
        """A callback query with any ``data`` for ``message``, as a modified client can send
        (or an old one still showing a removed button); returns the query's id."""
        with self._cond:
            stored = self._stored(message)
            state = self._chat_state(stored.chat_id)
            self._users.setdefault(user["id"], dict(user))
            query_id = str(4_000_000_000_000 + len(self._queries) + 1)
            self._queries[query_id] = CallbackQueryRecord(
                query_id, state.info["id"], stored.message_id, user["id"], data, time.monotonic()
            )
            self._queue({"callback_query": {
                "id": query_id,
                "from": dict(user),
                "message": self._message_json(state, stored),
                "chat_instance": str(abs(state.info["id"]) * 7 + 1),
                "data": data,
            }})
            return query_id

    def _stored(self, message: StoredMessage | dict[str, Any]) -> StoredMessage:
        """The fake's current copy of a message (lock held)."""
        chat_id = message.chat_id if isinstance(message, StoredMessage) else message["chat"]["id"]
        message_id = (
            message.message_id if isinstance(message, StoredMessage) else message["message_id"]
        )
        stored = self._find(self._chat_state(chat_id), message_id)
        if stored is None:
            raise ValueError(f"no message {message_id} in chat {chat_id}")
        return stored

    def callback_queries(self) -> list[CallbackQueryRecord]:
        """Every press so far, in order, with the bot's answer."""
        with self._lock:
            return [replace(q) for q in self._queries.values()]

    def callback_query(self, query_id: str) -> CallbackQueryRecord:
        with self._lock:
            return replace(self._queries[query_id])

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue any update (e.g. ``{"callback_query": {...}}``); returns its update_id."""
        with self._cond:
            return self._queue(copy.deepcopy(update))

    def fail_next(
        self,
        method: str,
        error_code: int = 429,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        chat_id: dict[str, Any] | int | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (to ``chat_id``, if given) with an error.

        A 429 carries ``retry_after`` (default 1 s) and bans the request's chat for that long.
        """
        if error_code == 429:
            retry_after = retry_after or 1
            description = description or f"Too Many Requests: retry after {retry_after}"
        description = description or DEFAULT_FAILURE_TEXT.get(error_code, f"Error {error_code}")
        with self._lock:
            self._failures.append(
                _Failure(
                    method.lower(), error_code, description, retry_after, times, _chat_key(chat_id)
                )
            )

    def flood_control(
        self,
        min_interval_per_chat: float | None = 1.0,
        *,
        methods: Iterable[str] = ("sendMessage", "editMessageText"),
    ) -> None:
        """Answer 429 to ``methods`` calls coming faster than ``min_interval_per_chat`` in a chat.

        ``None`` turns flood control off.
        """
        with self._lock:
            self._flood_interval = min_interval_per_chat
            self._flood_methods = frozenset(m.lower() for m in methods)

    def group_limit(
        self, messages: int | None = GROUP_MESSAGES_PER_MINUTE, *, per: float = 60.0
    ) -> None:
        """Telegram's rule for groups, on from the start: at most ``messages`` new messages
        from the bot in one group within any ``per`` seconds. Past it the call gets 429 "Too
        Many Requests: retry after N" (N: until the oldest of them leaves the window) and the
        group is banned that long. ``None`` turns the rule off."""
        with self._lock:
            self._group_limit = messages
            self._group_window = per
            self._group_posts.clear()

    # test side: what happened

    def messages(self, chat: dict[str, Any] | int) -> list[StoredMessage]:
        with self._lock:
            return copy.deepcopy(self._chat_state(chat).messages)

    def bot_messages(self, chat: dict[str, Any] | int) -> list[StoredMessage]:
        return [m for m in self.messages(chat) if m.from_bot]

    def file_bytes(self, file_id: str) -> bytes:
        """What the bot uploaded as the file `file_id` (a photo's largest size)."""
        with self._lock:
            return self._files[file_id]

    def downloads(self) -> list[str]:
        """The path of every file download the bot asked for, served or not, in order."""
        with self._lock:
            return list(self._downloads)

    def drafts(self, chat: dict[str, Any] | int) -> list[tuple[int, str]]:
        """(draft_id, text) of every sendMessageDraft to this private chat, in order."""
        key = _chat_key(chat)
        with self._lock:
            return [(draft_id, text) for chat_id, draft_id, text in self._drafts if chat_id == key]

    def commands(self, language_code: str = "") -> list[tuple[str, str]]:
        """The bot's command menu for the default scope as a user of `language_code` sees it:
        the list set for that language, else the one set without a language (Telegram's rule)."""
        with self._lock:
            listing = self._commands.get(self._commands_key({"language_code": language_code}))
            if listing is None:
                listing = self._commands.get(self._commands_key({}), [])
            return [(c["command"], c["description"]) for c in listing]

    def requests(self, method: str | None = None) -> list[ApiRequest]:
        with self._lock:
            return [
                replace(r, params=copy.deepcopy(r.params))
                for r in self._requests
                if method is None or r.method.lower() == method.lower()
            ]

    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations)

    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by a getUpdates offset (or delivered to the webhook)."""
        with self._lock:
            return copy.deepcopy(self._updates)

    def deliveries(self) -> list[WebhookDelivery]:
        """Every POST of a queued update to the webhook, in order, failed ones included."""
        with self._lock:
            return list(self._deliveries)

    def webhook_info(self) -> dict[str, Any]:
        """What getWebhookInfo answers (the url is empty when no webhook is set)."""
        with self._lock:
            return self._api_getWebhookInfo({})

    def describe(self) -> str:
        """Every chat's messages and the last requests, for failure messages."""
        with self._lock:
            lines = []
            for chat in self._chats.values():
                lines.append(f"chat {chat.info['id']} ({chat.info['type']}):")
                for m in chat.messages:
                    who = "bot" if m.from_bot else m.from_user.get("username") or m.from_user["id"]
                    extra = f" reply_to={m.reply_to_message_id}" if m.reply_to_message_id else ""
                    extra += f" thread={m.thread_id}" if m.thread_id else ""
                    extra += f" {next(iter(m.media))}" if m.media else ""
                    extra += f" edits={m.edit_count}" if m.edit_count else ""
                    rows = (m.reply_markup or {}).get("inline_keyboard") or []
                    labels = [b.get("text") for row in rows for b in row]
                    extra += f" buttons={labels}" if labels else ""
                    lines.append(f"  #{m.message_id} {who}{extra}: {m.text!r}")
            lines.append("last requests:")
            for r in self._requests[-15:]:
                outcome = r.status if r.description is None else f"{r.status} {r.description}"
                lines.append(f"  {r.method} chat={r.chat_id} -> {outcome}")
            return "\n".join(lines)

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 5.0,  # noqa: ASYNC109 - a polling deadline, like wait_until's
        what: str = "",
    ) -> Any:
        """Await until ``predicate()`` is truthy and return its value; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() >= deadline:
                raise AssertionError(self._timeout_text(predicate, timeout, what))
            await asyncio.sleep(0.01)
        return value

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
        """Blocking twin of :meth:`wait_for` for synchronous tests."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() >= deadline:
                raise AssertionError(self._timeout_text(predicate, timeout, what))
            time.sleep(0.01)
        return value

    def _timeout_text(self, predicate: Callable[[], Any], timeout: float, what: str) -> str:
        return f"timed out after {timeout}s waiting for {what or predicate!r}\n{self.describe()}"

    # HTTP side

    def handle(
        self, path: str, content_type: str, body: bytes, query: str
    ) -> tuple[int, dict[str, Any]]:
        """Answer one HTTP request; the server thread calls this."""
        match = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)", path)
        if match is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        if match.group(1) != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        method = match.group(2)
        api = self._api.get(method.lower())
        if api is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        try:
            params = _decode_body(content_type, body, query)
        except ValueError as exc:
            return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: {exc}"}
        with self._cond:
            request = ApiRequest(method, params, time.monotonic(), _chat_key(params.get("chat_id")))
            self._requests.append(request)
            try:
                self._gate(request)
                result = api(params)
            except _ApiError as err:
                request.status, request.description = err.code, err.description
                answer: dict[str, Any] = {
                    "ok": False,
                    "error_code": err.code,
                    "description": err.description,
                }
                if err.retry_after is not None:
                    answer["parameters"] = {"retry_after": err.retry_after}
                return err.code, answer
            request.status = 200
            return 200, {"ok": True, "result": result}

    def download(self, path: str) -> tuple[int, bytes]:
        """Answer a GET of ``/file/bot<token>/<file_path>``: the file's bytes, or Telegram's
        404 (the server thread calls this)."""
        match = re.fullmatch(r"/file/bot([^/]+)/(.+)", unquote(path))
        with self._lock:
            self._downloads.append(path)
            found = None
            if match is not None and match.group(1) == self.token:
                found = next((f for f in self._sent_files.values()
                              if f.path == match.group(2) and f.size <= MAX_DOWNLOAD_BYTES), None)
        if found is None:
            return 404, json.dumps(
                {"ok": False, "error_code": 404, "description": "Not Found"}).encode()
        return 200, found.data

    def _gate(self, request: ApiRequest) -> None:
        """Bans, injected failures, flood control and the group limit, in that order (lock
        held)."""
        chat, method = request.chat_id, request.method.lower()
        out = self._chats.get(chat) if isinstance(chat, int) else None
        if out is not None and out.bot_status in ("left", "kicked") and method.startswith(
            ("send", "edit", "delete", "copy", "forward", "pin", "unpin", "leave")
        ):
            how = "is not a member of" if out.bot_status == "left" else "was kicked from"
            raise _ApiError(403, f"Forbidden: bot {how} the {out.info['type']} chat")
        if chat is not None and (until := self._bans.get(chat)) and request.at < until:
            self._violations.append(Violation(request, until - request.at))
            raise self._too_many(chat, math.ceil(until - request.at))
        for failure in self._failures:
            if failure.method == method and failure.chat_id in (None, chat):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                if failure.error_code == 429 and chat is not None:
                    self._bans[chat] = request.at + (failure.retry_after or 0)
                raise _ApiError(failure.error_code, failure.description, failure.retry_after)
        if self._flood_interval is not None and chat is not None and method in self._flood_methods:
            last = self._last_send.get(chat)
            if last is not None and request.at - last < self._flood_interval:
                raise self._too_many(
                    chat, max(1, math.ceil(self._flood_interval - (request.at - last)))
                )
            self._last_send[chat] = request.at
        if self._group_limit is not None and method in _POSTING and self._in_group(chat):
            self._count_group_post(chat, request.at)

    def _in_group(self, chat: int | str | None) -> bool:
        state = self._chats.get(chat) if isinstance(chat, int) else None
        return state is not None and state.info["type"] in ("group", "supergroup")

    def _count_group_post(self, chat: int | str | None, at: float) -> None:
        """One more message posted in a group, or a 429 when its minute is full (lock held)."""
        assert chat is not None and self._group_limit is not None
        sent = self._group_posts.setdefault(chat, deque())
        while sent and at - sent[0] >= self._group_window:
            sent.popleft()
        if len(sent) >= self._group_limit:
            raise self._too_many(chat, max(1, math.ceil(sent[0] + self._group_window - at)))
        sent.append(at)

    def _too_many(self, chat: int | str, retry_after: int) -> _ApiError:
        self._bans[chat] = max(self._bans.get(chat, 0.0), time.monotonic() + retry_after)
        return _ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)

    # state helpers (lock held)

    def _chat_state(self, chat: Any) -> _Chat:
        key = _chat_key(chat)
        if isinstance(key, str):
            found = next(
                (c for c in self._chats.values() if f"@{c.info.get('username')}" == key), None
            )
        else:
            found = self._chats.get(key)  # type: ignore[arg-type]
        if found is None:
            raise _bad("chat not found")
        return found

    @staticmethod
    def _find(chat: _Chat, message_id: Any) -> StoredMessage | None:
        return next((m for m in chat.messages if m.message_id == message_id), None)

    def _store(
        self,
        chat: _Chat,
        sender: dict[str, Any],
        text: str,
        entities: list[dict[str, Any]],
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
        parse_mode: str | None = None,
        reply_markup: dict[str, Any] | None = None,
    ) -> StoredMessage:
        message = StoredMessage(
            chat_id=chat.info["id"],
            message_id=chat.next_message_id,
            from_user=sender,
            text=text,
            entities=entities,
            date=int(time.time()),
            thread_id=thread_id,
            reply_to_message_id=reply_to,
            parse_mode=parse_mode,
            reply_markup=reply_markup,
        )
        chat.next_message_id += 1
        chat.messages.append(message)
        return message

    def _message_json(
        self, chat: _Chat, message: StoredMessage, nested: bool = True
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": message.message_id,
            "date": message.date,
            "chat": dict(chat.info),
            "from": dict(message.from_user),
        }
        if message.photo is not None or message.media is not None:
            if message.photo is not None:
                data["photo"] = copy.deepcopy(message.photo)
            data.update(copy.deepcopy(message.media or {}))
            if message.text:
                data["caption"] = message.text
            if message.entities:
                data["caption_entities"] = copy.deepcopy(message.entities)
        else:
            data["text"] = message.text
            if message.entities:
                data["entities"] = copy.deepcopy(message.entities)
        if message.thread_id is not None:
            data["message_thread_id"] = message.thread_id
            if chat.info.get("is_forum"):
                data["is_topic_message"] = True
        if nested and message.reply_to_message_id is not None:
            target = self._find(chat, message.reply_to_message_id)
            if target is not None:
                data["reply_to_message"] = self._message_json(chat, target, nested=False)
        if message.quote is not None:
            data["quote"] = copy.deepcopy(message.quote)
        if message.forward_origin is not None:
            data["forward_origin"] = copy.deepcopy(message.forward_origin)
        if message.edit_date is not None:
            data["edit_date"] = message.edit_date
        if message.reply_markup:
            data["reply_markup"] = copy.deepcopy(message.reply_markup)
        return data

    def _queue(self, update: dict[str, Any]) -> int:
        update["update_id"] = self._next_update_id
        self._next_update_id += 1
        self._updates.append(update)
        self._cond.notify_all()
        return update["update_id"]

    @staticmethod
    def _formatted(
        params: dict[str, Any], *, allow_empty: bool = False
    ) -> tuple[str, list[dict[str, Any]]]:
        text = params.get("text")
        text = "" if text is None else str(text)
        mode = (params.get("parse_mode") or "").lower()
        try:
            if params.get("entities"):
                plain, entities = text, list(params["entities"])
            elif mode == "html":
                plain, entities = parse_html(text)
            elif mode in ("markdownv2", "markdown"):
                plain, entities = parse_markdown(text, v2=mode == "markdownv2")
            elif mode:
                raise _bad("unsupported parse_mode")
            else:
                plain, entities = text, []
        except EntityParseError as exc:
            raise _bad(f"can't parse entities: {exc}") from None
        plain, entities = _strip_text(plain, entities)
        if not plain and not allow_empty:
            raise _bad("message text is empty")
        if utf16_len(plain) > MAX_TEXT_UTF16:
            raise _bad("message is too long")
        return plain, entities

    # Bot API methods (lock held); the name after _api_ is the method, matched case-insensitively

    def _api_getMe(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _api_logOut(self, p: dict[str, Any]) -> bool:
        return True

    def _api_close(self, p: dict[str, Any]) -> bool:
        return True

    def _api_setWebhook(self, p: dict[str, Any]) -> bool:
        url = str(p.get("url") or "")
        if not url:
            return self._api_deleteWebhook(p)
        now = time.monotonic()
        if now < self._next_set_webhook:
            raise _ApiError(429, "Too Many Requests: retry after 1", 1)
        self._next_set_webhook = now + self.set_webhook_interval
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _bad("invalid webhook URL specified")
        secret = str(p.get("secret_token") or "")
        if len(secret) > 256:
            raise _bad("secret token is too long")
        if not re.fullmatch(r"[A-Za-z0-9_-]*", secret):
            raise _bad("secret token contains unallowed characters")
        if parts.scheme == "http":
            # Telegram wants HTTPS. Test-only allowance: plain http to loopback, as a self-hosted
            # telegram-bot-api in --local mode accepts, so the bot's own server can be reached.
            if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
                raise _ApiError(400, HTTPS_REQUIRED)
        elif (parts.port or 443) not in WEBHOOK_PORTS:
            raise _ApiError(400, WEBHOOK_PORT_FORBIDDEN)
        if p.get("drop_pending_updates"):
            self._updates.clear()
        if p.get("allowed_updates") is not None:
            self._allowed_updates = set(p["allowed_updates"]) or None
        max_connections = min(max(int(p.get("max_connections") or 40), 1), 100)
        self._webhook = _Webhook(url, secret, max_connections)
        self._cond.notify_all()  # a long poll in progress ends, as on Telegram
        if self._delivery_thread is None or not self._delivery_thread.is_alive():
            self._delivery_thread = threading.Thread(
                target=self._deliver, name="FakeBotAPI webhook", daemon=True
            )
            self._delivery_thread.start()
        return True

    def _api_deleteWebhook(self, p: dict[str, Any]) -> bool:
        self._webhook = None
        if p.get("drop_pending_updates"):
            self._updates.clear()
        self._cond.notify_all()
        return True

    def _api_getWebhookInfo(self, p: dict[str, Any]) -> dict[str, Any]:
        webhook = self._webhook
        info: dict[str, Any] = {
            "url": webhook.url if webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if webhook is not None:
            info["max_connections"] = webhook.max_connections
            if self._allowed_updates is not None:
                info["allowed_updates"] = sorted(self._allowed_updates)
            if webhook.last_error_date is not None:
                info["last_error_date"] = webhook.last_error_date
                info["last_error_message"] = webhook.last_error_message
        return info

    def _deliver(self) -> None:
        """The webhook's delivery loop: POST queued updates in order, each until it gets a 2xx."""
        while True:
            with self._cond:
                while not self._stopping and self._webhook is not None and not self._updates:
                    self._cond.wait(0.5)
                webhook = self._webhook
                if self._stopping or webhook is None:
                    return
                update = self._updates[0]
                if not self._wanted(update):
                    self._updates.pop(0)  # Telegram never sends what allowed_updates excludes
                    continue
            status, reason = post_update(webhook.url, update, webhook.secret or None)
            with self._cond:
                error = None
                if status is None:
                    error = reason
                elif not 200 <= status < 300:
                    error = f"Wrong response from the webhook: {status} {reason}"
                self._deliveries.append(
                    WebhookDelivery(update["update_id"], status, time.monotonic(), error)
                )
                if error is None:
                    if self._updates and self._updates[0] is update:
                        self._updates.pop(0)
                    continue
                webhook.last_error_date, webhook.last_error_message = int(time.time()), error
                self._cond.wait(WEBHOOK_RETRY_DELAY)

    def _api_getUpdates(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        if self._webhook is not None:
            raise _ApiError(409, WEBHOOK_ACTIVE)
        offset = int(p.get("offset") or 0)
        limit = min(max(int(p.get("limit") or 100), 1), 100)
        deadline = time.monotonic() + min(max(float(p.get("timeout") or 0), 0.0), MAX_POLL_TIMEOUT)
        if p.get("allowed_updates") is not None:
            self._allowed_updates = set(p["allowed_updates"]) or None
        if offset < 0:
            del self._updates[: max(len(self._updates) + offset, 0)]
        elif offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        # A newer getUpdates terminates an older one, as on Telegram (and frees abandoned polls).
        self._poll_generation += 1
        generation = self._poll_generation
        self._cond.notify_all()
        while True:
            if self._webhook is not None:
                raise _ApiError(409, "Conflict: terminated by setWebhook request")
            ready = [u for u in self._updates if self._wanted(u)][:limit]
            if ready or self._stopping:
                return copy.deepcopy(ready)
            if generation != self._poll_generation:
                raise _ApiError(409, DEFAULT_FAILURE_TEXT[409])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self._cond.wait(remaining)

    def _wanted(self, update: dict[str, Any]) -> bool:
        kind = next(k for k in update if k != "update_id")
        if self._allowed_updates is None:
            return kind not in ("chat_member", "message_reaction", "message_reaction_count")
        return kind in self._allowed_updates

    def _api_sendMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat_state(p.get("chat_id"))
        text, entities = self._formatted(p)
        reply = p.get("reply_parameters") or {}
        reply_id = reply.get("message_id", p.get("reply_to_message_id"))
        thread_id = p.get("message_thread_id")
        if reply_id is not None:
            target = self._find(chat, reply_id)
            if target is None:
                if not (
                    reply.get("allow_sending_without_reply") or p.get("allow_sending_without_reply")
                ):
                    raise _bad("message to be replied not found")
                reply_id = None
            elif thread_id is None:
                thread_id = target.thread_id
        message = self._store(
            chat,
            dict(self.bot_user),
            text,
            entities,
            thread_id=thread_id,
            reply_to=reply_id,
            parse_mode=p.get("parse_mode"),
            reply_markup=self._inline_markup(p.get("reply_markup")),
        )
        return self._message_json(chat, message)

    def _api_sendPhoto(self, p: dict[str, Any]) -> dict[str, Any]:
        """Telegram's rules: an upload (multipart) of a PNG or JPEG up to 10 MB, width + height
        at most 10000 and sides at most 20:1, or the file_id of a photo sent before; a caption
        of at most 1024 characters after entity parsing."""
        chat = self._chat_state(p.get("chat_id"))
        photo = p.get("photo")
        if isinstance(photo, _Upload):
            if len(photo.data) > MAX_PHOTO_BYTES:
                raise _bad("PHOTO_SAVE_FILE_INVALID")
            size = _image_size(photo.data)
            if size is None:
                raise _bad("IMAGE_PROCESS_FAILED")
            width, height = size
            if width + height > 10_000 or max(width, height) > 20 * max(min(width, height), 1):
                raise _bad("PHOTO_INVALID_DIMENSIONS")
            file_id = f"AgACAgIAAxkBAAI{len(self._files) + 1:08d}"
            self._files[file_id] = photo.data
            sizes = [{"file_id": file_id, "file_unique_id": f"AQAD{len(self._files):08d}",
                      "width": width, "height": height, "file_size": len(photo.data)}]
        elif isinstance(photo, str) and photo in self._files:
            data = self._files[photo]
            width, height = _image_size(data) or (0, 0)
            sizes = [{"file_id": photo, "file_unique_id": f"AQAD{photo[-8:]}", "width": width,
                      "height": height, "file_size": len(data)}]
        elif photo:
            raise _bad("wrong file identifier/HTTP URL specified")
        else:
            raise _bad("there is no photo in the request")
        caption, entities = self._formatted(
            {"text": p.get("caption"), "parse_mode": p.get("parse_mode"),
             "entities": p.get("caption_entities")}, allow_empty=True,
        )
        if utf16_len(caption) > MAX_CAPTION_UTF16:
            raise _bad("message caption is too long")
        reply = p.get("reply_parameters") or {}
        reply_id = reply.get("message_id", p.get("reply_to_message_id"))
        if reply_id is not None and self._find(chat, reply_id) is None:
            if not (reply.get("allow_sending_without_reply")
                    or p.get("allow_sending_without_reply")):
                raise _bad("message to be replied not found")
            reply_id = None
        message = self._store(
            chat, dict(self.bot_user), caption, entities, thread_id=p.get("message_thread_id"),
            reply_to=reply_id, parse_mode=p.get("parse_mode"),
            reply_markup=p.get("reply_markup"),
        )
        message.photo = sizes
        return self._message_json(chat, message)

    def _api_getFile(self, p: dict[str, Any]) -> dict[str, Any]:
        """A file someone sent: its path for the download, unless it is past the 20 MB that
        bots may download ("file is too big")."""
        stored = self._sent_files.get(str(p.get("file_id") or ""))
        if stored is None:
            raise _bad("invalid file_id")
        if stored.size > MAX_DOWNLOAD_BYTES:
            raise _ApiError(400, FILE_TOO_BIG)
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                "file_size": stored.size, "file_path": stored.path}

    def _api_editMessageText(self, p: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat_state(p.get("chat_id"))
        message = self._find(chat, p.get("message_id"))
        if message is None:
            raise _bad("message to edit not found")
        if not message.from_bot:
            raise _bad("message can't be edited")
        if message.photo is not None:
            raise _bad("there is no text in the message to edit")
        text, entities = self._formatted(p)
        markup = self._inline_markup(p.get("reply_markup"))
        if (text, entities, markup) == (message.text, message.entities, message.reply_markup):
            raise _ApiError(400, NOT_MODIFIED)
        message.history.append(message.text)
        message.text, message.entities, message.reply_markup = text, entities, markup
        message.parse_mode = p.get("parse_mode")
        message.edit_count += 1
        message.edit_date = int(time.time())
        return self._message_json(chat, message)

    def _api_editMessageReplyMarkup(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("inline_message_id"):
            raise _bad("inline messages are not supported by the fake")
        chat = self._chat_state(p.get("chat_id"))
        message = self._find(chat, p.get("message_id"))
        if message is None:
            raise _bad("message to edit not found")
        if not message.from_bot:
            raise _bad("message can't be edited")
        markup = self._inline_markup(p.get("reply_markup"))
        if markup == message.reply_markup:
            raise _ApiError(400, NOT_MODIFIED)
        message.reply_markup = markup
        message.edit_date = int(time.time())
        return self._message_json(chat, message)

    @staticmethod
    def _inline_markup(markup: Any) -> dict[str, Any] | None:
        """An inline keyboard as Telegram keeps it (none if it has no buttons), or a 400."""
        if not markup:
            return None
        if not isinstance(markup, dict) or "inline_keyboard" not in markup:
            return markup if isinstance(markup, dict) else None  # reply keyboards: kept as sent
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad("can't parse inline keyboard button: field \"inline_keyboard\" must be "
                       "an Array of Arrays")
        for button in (b for row in rows for b in row):
            if not isinstance(button, dict) or not button.get("text"):
                raise _bad("BUTTON_TEXT_INVALID")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA_BYTES:
                raise _bad("BUTTON_DATA_INVALID")
        if not any(rows):
            return None
        return copy.deepcopy(markup)

    def _api_deleteMessage(self, p: dict[str, Any]) -> bool:
        chat = self._chat_state(p.get("chat_id"))
        self._delete(chat, p.get("message_id"))
        return True

    def _api_deleteMessages(self, p: dict[str, Any]) -> bool:
        chat = self._chat_state(p.get("chat_id"))
        for message_id in p.get("message_ids") or []:
            if self._find(chat, message_id) is not None:
                self._delete(chat, message_id)
        return True

    def _delete(self, chat: _Chat, message_id: Any) -> None:
        message = self._find(chat, message_id)
        if message is None:
            raise _bad("message to delete not found")
        if not (message.from_bot or chat.info["type"] == "private" or self.bot_id in chat.admins):
            raise _bad("message can't be deleted")
        chat.messages.remove(message)

    def _api_sendChatAction(self, p: dict[str, Any]) -> bool:
        self._chat_state(p.get("chat_id"))
        if not p.get("action"):
            raise _bad("wrong parameter action in request")
        return True

    def _api_sendMessageDraft(self, p: dict[str, Any]) -> bool:
        chat = self._chat_state(p.get("chat_id"))
        if chat.info["type"] != "private":
            raise _ApiError(400, DRAFT_PEER_INVALID)
        if not p.get("draft_id"):
            raise _bad("draft_id must be non-zero")
        # Bot API 10.0 made the text optional (0-4096 characters after entities parsing; an
        # empty one shows "Thinking..."); 9.5 wanted 1-4096. Over 4096 is refused either way.
        text, _ = self._formatted(p, allow_empty=True)
        self._drafts.append((chat.info["id"], int(p["draft_id"]), text))
        return True

    def _api_getChat(self, p: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat_state(p.get("chat_id"))
        gifts = dict.fromkeys(
            (
                "unlimited_gifts",
                "limited_gifts",
                "unique_gifts",
                "premium_subscription",
                "gifts_from_channels",
            ),
            False,
        )
        return {
            **chat.info,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": gifts,
        }

    def _api_getChatMember(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._member(self._chat_state(p.get("chat_id")), int(p.get("user_id") or 0))

    def _api_leaveChat(self, p: dict[str, Any]) -> bool:
        """The bot leaves a group (Telegram then sends its own my_chat_member, from the bot)."""
        chat = self._chat_state(p.get("chat_id"))
        if chat.info["type"] == "private":
            raise _bad("chat member status can't be changed in private chats")
        old, chat.bot_status = chat.bot_status, "left"
        self._queue({"my_chat_member": self._member_change(chat, self.bot_user, old, "left")})
        return True

    def _api_getChatAdministrators(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        chat = self._chat_state(p.get("chat_id"))
        if chat.info["type"] == "private":
            raise _bad("there are no administrators in the private chat")
        owner = [chat.creator] if chat.creator is not None else []
        return [self._member(chat, user_id) for user_id in owner + sorted(chat.admins)]

    def _member(self, chat: _Chat, user_id: int) -> dict[str, Any]:
        user = dict(self.bot_user) if user_id == self.bot_id else self._users.get(user_id)
        if user is None:
            raise _bad("user not found")
        if chat.info["type"] == "private" or (
            user_id not in chat.admins and user_id != chat.creator
        ):
            in_chat = (
                chat.info["type"] == "private" or user_id in chat.members
                or (user_id == self.bot_id and chat.bot_status not in ("left", "kicked"))
            )
            return {"status": "member" if in_chat else "left", "user": user}
        if user_id == chat.creator:
            return {"status": "creator", "user": user, "is_anonymous": False}
        return {**self._admin_rights(), "status": "administrator", "user": user}

    @staticmethod
    def _admin_rights() -> dict[str, Any]:
        """The fields of a ChatMemberAdministrator besides its status and user."""
        rights = (
            "can_manage_chat can_delete_messages can_manage_video_chats can_restrict_members "
            "can_change_info can_invite_users can_post_stories can_edit_stories can_delete_stories "
            "can_pin_messages can_manage_topics"
        ).split()
        return {
            "can_be_edited": False,
            "is_anonymous": False,
            "can_promote_members": False,
            **dict.fromkeys(rights, True),
        }

    def _api_answerCallbackQuery(self, p: dict[str, Any]) -> bool:
        query = self._queries.get(str(p.get("callback_query_id") or ""))
        if (
            query is None or query.answered
            or time.monotonic() - query.at > self.callback_timeout
        ):
            raise _ApiError(400, QUERY_TOO_OLD)
        text = p.get("text")
        if text is not None and len(str(text)) > MAX_CALLBACK_ANSWER:
            raise _bad("MESSAGE_TOO_LONG")
        query.answered, query.text = True, None if text is None else str(text)
        query.show_alert = bool(p.get("show_alert"))
        return True

    @staticmethod
    def _commands_key(p: dict[str, Any]) -> str:
        return json.dumps(
            [p.get("scope") or {"type": "default"}, p.get("language_code") or ""], sort_keys=True
        )

    def _api_setMyCommands(self, p: dict[str, Any]) -> bool:
        self._commands[self._commands_key(p)] = list(p.get("commands") or [])
        return True

    def _api_getMyCommands(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        return copy.deepcopy(self._commands.get(self._commands_key(p), []))

    def _api_deleteMyCommands(self, p: dict[str, Any]) -> bool:
        self._commands.pop(self._commands_key(p), None)
        return True


def texts(fake: FakeBotAPI, chat: dict[str, Any] | int) -> list[str]:
    """The texts of the bot's messages in a chat, oldest first."""
    return [message.text for message in fake.bot_messages(chat)]
