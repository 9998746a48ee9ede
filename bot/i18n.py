"""The interface's languages: a gettext catalog per language (`bot/locale/LANG/LC_MESSAGES/
alpaca_bot.po`, read with Babel), the language of whoever is being answered, and `_` to translate.

English is the source language: every message is written in English in the code, marked with
`_` (translated where it is made), `N_` (a constant translated where it is shown) or `_n`
(plural). Placeholders are named (`{name}`) and filled by the call: `_("Hello {name}", name=x)`.
The language is a context variable, set where a request enters (a Telegram update, the console)
and inherited by the tasks it starts; code in between never passes it along. Adding a language
is one file: a catalog under `bot/locale/` (`make messages` writes its template).
"""

from __future__ import annotations

import contextvars
import gettext
import io
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

DOMAIN = "alpaca_bot"
SOURCE = "en"
"""The language the messages are written in (no catalog of its own)."""
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
NAMES: Mapping[str, str] = {"en": "English", "zh": "简体中文"}
"""How /lang names a language (in that language); a language without a name here shows its
code."""

_current: contextvars.ContextVar[str] = contextvars.ContextVar("language", default=SOURCE)


def catalog_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def languages() -> tuple[str, ...]:
    """The languages there are messages in: English and every catalog under `bot/locale/`."""
    found = sorted(p.name for p in LOCALE_DIR.iterdir() if catalog_path(p.name).is_file())
    return (SOURCE, *(language for language in found if language != SOURCE))


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalog of `language` (English: messages as written)."""
    path = catalog_path(language)
    if language == SOURCE or not path.is_file():
        return gettext.NullTranslations()
    with path.open("rb") as po:
        catalog = read_po(po, locale=language.replace("-", "_"), domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out, as msgfmt does
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def language_name(language: str) -> str:
    return NAMES.get(language, language)


def language_of(code: str | None) -> str:
    """The catalog for a Telegram `language_code` or a locale name (`zh_CN.UTF-8`): its
    language if there is a catalog of it, else English. Traditional Chinese (zh-hant, zh-tw,
    zh-hk) reads the Simplified catalog until one of its own exists."""
    if not code:
        return SOURCE
    tag = code.split(".")[0].split("@")[0].replace("_", "-").lower()
    known = languages()
    if tag in known:
        return tag
    base = tag.split("-")[0]
    return base if base in known else SOURCE


def locale_language(environ: Mapping[str, str] | None = None) -> str:
    """The language the process's locale asks for, as gettext looks it up: LANGUAGE, LC_ALL,
    LC_MESSAGES, LANG (the first set; `C`/`POSIX` are English)."""
    env = os.environ if environ is None else environ
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "")
        if value:
            first = value.split(":")[0]
            return SOURCE if first in ("C", "POSIX") or first.startswith("C.") else language_of(first)
    return SOURCE


def current() -> str:
    """The language messages are being written in here."""
    return _current.get()


def use(language: str) -> None:
    """Answer in `language` from here on, in this task and the tasks it starts."""
    _current.set(language if language in languages() else SOURCE)


@contextmanager
def speaking(language: str) -> Iterator[None]:
    """Write messages in `language` within the block."""
    token = _current.set(language if language in languages() else SOURCE)
    try:
        yield
    finally:
        _current.reset(token)


def _(message: str, /, **values: object) -> str:
    """`message` in the current language, its `{placeholders}` filled from `values`."""
    text = translations(current()).gettext(message)
    return text.format(**values) if values else text


def _n(singular: str, plural: str, n: int, /, **values: object) -> str:
    """The form of a message for `n` things in the current language; `{n}` is `n`."""
    text = translations(current()).ngettext(singular, plural, n)
    return text.format(n=n, **values)


def N_(message: str, /) -> str:
    """Mark a message translated later, where it is shown (`_(constant)`)."""
    return message
