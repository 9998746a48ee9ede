"""The interface's catalogs: every message marked in the code is translated in every language,
no catalog keeps a message the code no longer has, placeholders agree, and the language follows
Telegram's `language_code` and the console's locale."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bot import i18n
from bot.i18n import _, _n, language_of, locale_language, speaking

ROOT = Path(i18n.__file__).resolve().parent
KEYWORDS = {"_": None, "N_": None, "_n": (1, 2)}
"""The same keywords as `make messages` (pybabel extract -k _ -k N_ -k _n:1,2)."""


def marked() -> dict[str, tuple[str, ...]]:
    """Every message marked in the code: its id and (for plurals) both English forms."""
    found: dict[str, tuple[str, ...]] = {}
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map=[("**.py", "python")], keywords=KEYWORDS
    ):
        forms = (message,) if isinstance(message, str) else tuple(message)
        found[forms[0]] = forms
    return found


def catalog(language: str):  # type: ignore[no-untyped-def]
    with i18n.catalog_path(language).open("rb") as po:
        return read_po(po, locale=language)


def fields(text: str) -> set[str]:
    return {name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name is not None}


TRANSLATED = [language for language in i18n.languages() if language != i18n.SOURCE]


def test_there_is_a_chinese_catalog_and_much_is_marked() -> None:
    assert "zh" in i18n.languages()
    assert len(marked()) > 200


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_is_translated_and_none_is_unused(language: str) -> None:
    entries = {m.id if isinstance(m.id, str) else m.id[0]: m for m in catalog(language) if m.id}
    code = marked()
    missing = sorted(set(code) - set(entries))
    unused = sorted(set(entries) - set(code))
    assert not missing, f"not in the {language} catalog (run make messages): {missing[:5]}"
    assert not unused, f"in the {language} catalog but not in the code: {unused[:5]}"
    untranslated = [key for key, m in entries.items()
                    if not all(m.string if isinstance(m.string, (list, tuple)) else [m.string])
                    or m.fuzzy]
    assert not untranslated, f"not translated into {language}: {untranslated[:5]}"


@pytest.mark.parametrize("language", TRANSLATED)
def test_placeholders_match_and_every_translation_formats(language: str) -> None:
    code = marked()
    for m in catalog(language):
        if not m.id:
            continue
        forms = code[m.id if isinstance(m.id, str) else m.id[0]]
        want = set().union(*(fields(form) for form in forms))
        strings = m.string if isinstance(m.string, (list, tuple)) else [m.string]
        for text in strings:
            assert fields(text) == want, (m.id, text)
            if want:
                text.format(**dict.fromkeys(want, 1))


def test_translations_are_used_and_english_is_the_source() -> None:
    with speaking("zh"):
        assert re.search(r"[\u4e00-\u9fff]", _("⏹ stopped"))
        assert _("Unknown command. /help lists what I understand.").count("/help") == 1
        assert "3" in _n("⏳ {n} ahead of you…", "⏳ {n} ahead of you…", 3)
    assert _("⏹ stopped") == "⏹ stopped"
    assert i18n.current() == i18n.SOURCE


@pytest.mark.parametrize(("code", "language"), [
    ("zh", "zh"), ("zh-hans", "zh"), ("zh-cn", "zh"), ("zh-sg", "zh"), ("zh-CN", "zh"),
    ("zh-hant", "zh"), ("zh-tw", "zh"), ("zh-hk", "zh"),
    ("en", "en"), ("en-US", "en"), ("de", "en"), ("pt-br", "en"), ("", "en"), (None, "en"),
])
def test_telegram_language_codes(code: str | None, language: str) -> None:
    assert language_of(code) == language


@pytest.mark.parametrize(("environ", "language"), [
    ({"LANG": "zh_CN.UTF-8"}, "zh"),
    ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "zh_TW.UTF-8"}, "zh"),
    ({"LANG": "zh_CN.UTF-8", "LC_ALL": "C"}, "en"),
    ({"LANGUAGE": "zh_CN:en", "LANG": "en_US.UTF-8"}, "zh"),
    ({"LANG": "C.UTF-8"}, "en"),
    ({}, "en"),
])
def test_the_console_follows_the_locale(environ: dict[str, str], language: str) -> None:
    assert locale_language(environ) == language


def test_an_unknown_language_speaks_english() -> None:
    with speaking("xx"):
        assert i18n.current() == i18n.SOURCE
