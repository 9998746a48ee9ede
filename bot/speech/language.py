"""Which language a note is transcribed in: Whisper's detection, with the sender's Telegram
language as the hint where the detection is unsure (a short note from a Chinese app's user is
transcribed as Chinese), or the language the operator fixed (`asr_language`).

Pure: the probabilities come from the model, the rule is here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

AUTO = "auto"
SURE = 0.8
"""Whisper's top language at least this likely: the detection stands, whatever the hint."""
PLAUSIBLE = 0.25
"""Below SURE, the hint wins when Whisper gives it at least this share of its top language's
probability (a Chinese speaker's note heard as Japanese at 0.4 and Chinese at 0.3: Chinese);
a hint the audio plainly is not (English speech from a Chinese app: Chinese at 0.01) loses."""
_ALIASES = {"iw": "he", "jv": "jw", "nb": "no", "zh-yue": "yue"}
"""Tags Telegram (IETF) and Whisper spell differently."""


def whisper_language(code: str | None, supported: Collection[str]) -> str | None:
    """The Whisper language for a Telegram `language_code` (an IETF tag: `zh-hans`, `en-US`,
    `pt-br`), or None when Whisper does not know it."""
    if not code:
        return None
    tag = code.strip().replace("_", "-").lower()
    for candidate in (tag, _ALIASES.get(tag), tag.split("-")[0],
                      _ALIASES.get(tag.split("-")[0])):
        if candidate and candidate in supported:
            return candidate
    return None


def choose_language(probabilities: Iterable[tuple[str, float]], hint: str | None) -> str:
    """The language to transcribe in, from Whisper's (language, probability) pairs and the
    sender's language (`whisper_language`): the most likely language, unless it is below
    SURE and the hint is PLAUSIBLE."""
    ranked = sorted(probabilities, key=lambda pair: pair[1], reverse=True)
    if not ranked:
        if hint is None:
            raise ValueError("no language probabilities and no hint")
        return hint
    best, likelihood = ranked[0]
    if hint is None or hint == best or likelihood >= SURE:
        return best
    hinted = dict(ranked).get(hint, 0.0)
    return hint if hinted >= PLAUSIBLE * likelihood else best
