"""Prompt tokens and token bytes from a llama.cpp vocabulary, shared by every engine.

One implementation of the tokenizing rules, so that `count_tokens` and the tokens an engine
evaluates always agree: segment by segment, control tokens only in template markup
(`special=True`), user text always plain, and a BOS first when the model adds one (unless the
template wrote it itself). These calls only read the vocabulary and may run on any thread.
"""

from __future__ import annotations

import ctypes
from typing import Any

from bot.core.prompt import Prompt


def tokenize_text(vocab: Any, text: str, *, special: bool) -> list[int]:
    """Tokens of one piece of text, never with a BOS."""
    import llama_cpp

    data = text.encode("utf-8")
    if not data:
        return []
    size = len(data) + 8
    while True:
        buffer = (llama_cpp.llama_token * size)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, size, False, special)
        if n >= 0:
            return list(buffer[:n])
        size = -n


def tokenize_prompt(vocab: Any, prompt: Prompt) -> list[int]:
    """Tokenize segment by segment: markup with control tokens, user text as plain text."""
    import llama_cpp

    tokens: list[int] = []
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    bos = int(llama_cpp.llama_vocab_bos(vocab))
    if add_bos and bos >= 0:
        tokens.append(bos)
    for segment in prompt:
        tokens.extend(tokenize_text(vocab, segment.text, special=segment.special))
    if add_bos and len(tokens) > 1 and tokens[1] == bos:
        del tokens[0]  # the template wrote the BOS itself
    return tokens


def token_piece(vocab: Any, token: int) -> bytes:
    """The bytes of one token as text (control tokens render as nothing)."""
    import llama_cpp

    size = 64
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
        if n >= 0:
            return buffer.raw[:n]
        size = -n
