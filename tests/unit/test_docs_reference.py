"""The configuration reference is generated from Settings and the knob table, and is current."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from bot.core.knobs import KNOBS
from bot.i18n import translations
from bot.ops import docs_reference
from bot.ops.docs_reference import PAGES, ProseError, load_prose, main, render

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_committed_reference_is_current(language: str) -> None:
    page = ROOT / PAGES[language]
    assert page.read_text(encoding="utf-8") == render(language), (
        f"{PAGES[language]} is not what the settings and knob tables say: run `make docs-reference`"
    )


def test_check_reports_a_stale_page_and_writes_nothing(tmp_path: Path) -> None:
    for page in PAGES.values():
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text("old\n", encoding="utf-8")
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert all((tmp_path / page).read_text(encoding="utf-8") == "old\n" for page in PAGES.values())
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--check", "--root", str(tmp_path)]) == 0


def test_a_setting_without_prose_is_refused() -> None:
    prose = copy.deepcopy(load_prose())
    del prose["key"]["retention_days"]
    with pytest.raises(ProseError, match="retention_days: no prose"):
        render("en", prose)


def test_prose_in_one_language_only_is_refused() -> None:
    prose = copy.deepcopy(load_prose())
    del prose["key"]["slots"]["zh"]
    with pytest.raises(ProseError, match="slots: no zh text"):
        render("en", prose)


def test_a_setting_in_no_section_is_refused() -> None:
    prose = copy.deepcopy(load_prose())
    for section in prose["section"]:
        section["keys"] = [key for key in section["keys"] if key != "asr_model"]
    with pytest.raises(ProseError, match="asr_model: a configuration key in no section"):
        render("zh", prose)


def test_prose_of_a_setting_that_does_not_exist_is_refused() -> None:
    prose = copy.deepcopy(load_prose())
    prose["key"]["no_such_key"] = {"en": "x", "zh": "x"}
    with pytest.raises(ProseError, match="no_such_key: prose of no key"):
        render("en", prose)


def test_the_knobs_meanings_are_translated_in_the_chinese_page() -> None:
    page = render("zh")
    for knob in KNOBS:
        translated = translations("zh").gettext(knob.help)
        assert translated != knob.help, f"the zh catalog lacks the help of /{knob.command}"
        assert translated in page


def test_defaults_and_bounds_come_from_the_code() -> None:
    page = render("en")
    assert "| `max_ctx` | `ALPACA_BOT_MAX_CTX` | 2048 | ≥ 128 |" in page
    assert "| `temp` | `ALPACA_BOT_TEMP` | 0.2 | 0–5 |" in page
    assert "| `engine` | `ALPACA_BOT_ENGINE` | `pool` | `pool`, `simple`, `remote` |" in page
    assert docs_reference.env_var("asr_model") == "ALPACA_BOT_ASR_MODEL"
