"""Prompt tokens and token bytes from a llama.cpp vocabulary, shared by both local engines.

One implementation of the tokenizing rules, so that `count_tokens` and the tokens an engine
evaluates always agree: segment by segment, control tokens only in template markup
(`special=True`), user text always plain, and a BOS first when the model adds one (unless the
template wrote it itself). These calls only read the vocabulary and may run on any thread.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
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


class PromptTokenizer:
    """Tokenizes prompts; remembers the tokens of the last `cache_size` distinct segments.

    Segments are tokenized independently, so a conversation's earlier turns give the same
    tokens every time: a follow-up in a long chat tokenizes only its new text (for a small
    model, tokenizing 1500 tokens again costs as much as evaluating a few). Thread-safe.
    """

    def __init__(self, vocab: Any, *, cache_size: int = 2048) -> None:
        import llama_cpp

        self._vocab = vocab
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self._bos = int(llama_cpp.llama_vocab_bos(vocab))
        self._segment: Callable[[str, bool], tuple[int, ...]] = self._tokenize_segment
        if cache_size > 0:
            self._segment = functools.lru_cache(maxsize=cache_size)(self._tokenize_segment)

    def _tokenize_segment(self, text: str, special: bool) -> tuple[int, ...]:
        return tuple(tokenize_text(self._vocab, text, special=special))

    def __call__(self, prompt: Prompt) -> list[int]:
        tokens: list[int] = []
        bos = self._bos
        if self._add_bos and bos >= 0:
            tokens.append(bos)
        for segment in prompt:
            tokens.extend(self._segment(segment.text, segment.special))
        if self._add_bos and len(tokens) > 1 and tokens[1] == bos:
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


def token_text(vocab: Any, token: int) -> str:
    """A token's text as the vocabulary spells it (control tokens included); "" for none."""
    import llama_cpp

    if token < 0:
        return ""
    text = llama_cpp.llama_vocab_get_text(vocab, token)
    return text.decode("utf-8", errors="replace") if text else ""


class SampledPieces:
    """What a sampled token adds to a reply: its bytes, or None when it ends generation.

    Fixed for a vocabulary and asked for every token generated, so each token is looked up in
    llama.cpp once. For the worker thread that samples (not thread-safe).
    """

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab
        self._seen: dict[int, bytes | None] = {}

    def __call__(self, token: int) -> bytes | None:
        try:
            return self._seen[token]
        except KeyError:
            pass
        import llama_cpp

        piece = None if llama_cpp.llama_vocab_is_eog(self._vocab, token) else token_piece(
            self._vocab, token)
        self._seen[token] = piece
        return piece
