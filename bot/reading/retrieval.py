"""Which passages answer a question: BM25 (Okapi, with bm25s's sparse matrices) over words for
alphabetic text and over character bigrams for Chinese, which has no spaces between words. No
model is needed, it is fast (a 200-page document's index answers in milliseconds), and a word
of the question that no passage holds scores nothing, so an unrelated question gets no
passages at all."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import bm25s
import numpy as np
import snowballstemmer
from bm25s.stopwords import STOPWORDS_CHINESE, STOPWORDS_EN_PLUS

_TOKEN = re.compile(r"[^\W_]+")
_CJK = re.compile(
    r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
    r"\U00020000-\U0002fa1f]+)"
)
"""Han (and kana, Hangul): scripts written without spaces, indexed by character bigrams."""
# bm25s sets its own logger to DEBUG on import, which would print every index it builds past
# the bot's log_level: its messages are the bot's debugging at most.
logging.getLogger("bm25s").setLevel(logging.WARNING)
_ENGLISH = snowballstemmer.stemmer("english")
_STOPWORDS = frozenset(STOPWORDS_EN_PLUS) | frozenset(STOPWORDS_CHINESE)
"""Words too common to tell passages apart ("the", "what", "是", "什么"): a question made of
them alone is about no document."""


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """An English word's stem (`llamas`, `llama` -> `llama`; `eats` -> `eat`); other
    alphabets' words pass through unchanged."""
    return str(_ENGLISH.stemWord(word)) if word.isascii() else word


def terms(text: str) -> list[str]:
    """The terms BM25 counts: lower-cased words (English ones stemmed), and for a run of CJK
    characters each pair of neighbours (a lone character stands for itself); stopwords left
    out."""
    found: list[str] = []
    for token in _TOKEN.findall(text):
        for index, piece in enumerate(_CJK.split(token)):
            if index % 2 == 0:
                word = piece.casefold()
                pieces = [] if not word or word in _STOPWORDS else [_stem(word)]
            elif len(piece) == 1:
                pieces = [piece]
            else:
                pieces = [piece[i:i + 2] for i in range(len(piece) - 1)]
            found.extend(p for p in pieces if p not in _STOPWORDS)
    return found


@dataclass(frozen=True)
class Hit:
    """A passage (its index in the texts indexed) and how well it matches."""

    index: int
    score: float


class PassageIndex:
    """BM25 over a fixed list of passage texts."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.size = len(texts)
        self._bm25 = bm25s.BM25()
        if texts:
            self._bm25.index([terms(text) or [""] for text in texts], show_progress=False)

    def search(self, query: str, *, limit: int = 20, within: set[int] | None = None) -> list[Hit]:
        """The best passages for `query`, best first, at most `limit`, only those that share a
        term with it (and, with `within`, only those indexes)."""
        wanted = list(dict.fromkeys(terms(query)))
        if not self.size or not wanted:
            return []
        scores = self._bm25.get_scores(wanted)
        if within is not None:
            mask = np.zeros(self.size, dtype=bool)
            mask[[i for i in within if 0 <= i < self.size]] = True
            scores = np.where(mask, scores, 0.0)
        best = np.argsort(-scores, kind="stable")[:limit]
        return [Hit(int(i), float(scores[i])) for i in best if scores[i] > 0]
