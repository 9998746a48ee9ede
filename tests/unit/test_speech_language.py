"""The language a note is transcribed in (`bot.speech.language`): Whisper's detection, the
sender's Telegram language where the detection is unsure, Chinese included (espeak-ng's
Mandarin is too poor for Whisper, so Chinese is proven here on the rule itself)."""

from __future__ import annotations

import pytest

from bot.speech.language import PLAUSIBLE, SURE, choose_language, whisper_language

WHISPER = ("en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "he", "yue", "jw", "no", "haw")


@pytest.mark.parametrize(("code", "language"), [
    ("zh-hans", "zh"), ("zh-hant", "zh"), ("zh-CN", "zh"), ("zh_TW", "zh"), ("zh", "zh"),
    ("en", "en"), ("en-US", "en"), ("pt-br", "pt"), ("ja", "ja"), ("iw", "he"),
    ("he", "he"), ("jv", "jw"), ("nb", "no"), ("zh-yue", "yue"), ("haw", "haw"),
    ("tlh", None), ("", None), (None, None),
])
def test_telegram_language_codes_become_whisper_languages(code: str | None,
                                                          language: str | None) -> None:
    assert whisper_language(code, WHISPER) == language


def test_an_english_only_model_knows_english_only() -> None:
    assert whisper_language("zh-hans", ["en"]) is None
    assert whisper_language("en-GB", ["en"]) == "en"


def test_a_short_chinese_note_from_a_chinese_app_is_transcribed_as_chinese() -> None:
    # Whisper is unsure of two seconds of Mandarin: Japanese first, Chinese close behind.
    heard = [("ja", 0.41), ("zh", 0.33), ("ko", 0.12), ("en", 0.08)]
    assert choose_language(heard, "zh") == "zh"
    # Without a hint (the console) the detection stands.
    assert choose_language(heard, None) == "ja"


def test_a_sure_detection_stands_whatever_the_hint() -> None:
    # An English note from a Chinese app's user stays English...
    assert choose_language([("en", 0.93), ("zh", 0.04)], "zh") == "en"
    # ...and Chinese from an English app's user stays Chinese.
    assert choose_language([("zh", 0.97), ("en", 0.01)], "en") == "zh"
    assert choose_language([("zh", SURE), ("en", SURE / 2)], "en") == "zh"


def test_a_hint_the_audio_plainly_is_not_loses() -> None:
    # Unsure, but Chinese is nowhere near: English speech stays English.
    assert choose_language([("en", 0.6), ("de", 0.2), ("zh", 0.02)], "zh") == "en"
    # At the edge of plausible the hint wins.
    edge = PLAUSIBLE * 0.6
    assert choose_language([("en", 0.6), ("zh", edge)], "zh") == "zh"
    assert choose_language([("en", 0.6), ("zh", edge - 0.001)], "zh") == "en"


def test_unsorted_probabilities_and_an_unknown_hint() -> None:
    assert choose_language([("en", 0.2), ("zh", 0.7), ("ja", 0.1)], None) == "zh"
    assert choose_language([("en", 0.5), ("zh", 0.4)], "tlh") == "en"
    assert choose_language([], "zh") == "zh"
    with pytest.raises(ValueError):
        choose_language([], None)
