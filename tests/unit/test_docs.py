"""docs/zh/ keeps in step with docs/, and both with the code.

Every English page `docs/X.md` has its Chinese twin `docs/zh/X.md`. The tables are found by what
their rows hold, not by their (translated) headings: a chat-command table has rows starting with
"| `/", a configuration table "| `key` | `ALPACA_BOT_KEY` |", the `alpaca-bot` table
"| `alpaca-bot", the metrics table "| `alpaca_bot_". Tables of one kind are compared page by page,
in the order they appear. What the code has (commands, settings, subcommands, metrics) must be
documented, and what is documented must exist.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from bot.chat.commands import COMMANDS
from bot.cli import build_parser
from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
ZH_DIR = DOCS / "zh"
METRICS_SOURCE = ROOT / "bot" / "metrics.py"

_FENCE = re.compile(r"^\s*(```|~~~)")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_CONFIG_KEY = re.compile(r"`([a-z][a-z0-9_]*)`")
_ENV_VAR = re.compile(r"`(ALPACA_BOT_[A-Z0-9_]+)`")
_CHAT_COMMAND = re.compile(r"`/([a-z_]+)")
_CLI_COMMAND = re.compile(r"`alpaca-bot(?: ([a-z]+))?")
_METRIC = re.compile(r"`(alpaca_bot_[a-z_]+)")
# A metric as bot/metrics.py declares it: the class that makes it, then its name.
_DECLARED_METRIC = re.compile(r"(\w+)\(\s*\"(alpaca_bot_[a-z_]+)\"")

Row = list[str]
Table = list[Row]

# Settings fields that are not configuration keys of their own.
NOT_CONFIG_KEYS = {"config"}  # the file the settings came from: --config / ALPACA_BOT_CONFIG


def english_pages() -> list[str]:
    """The English pages, as paths relative to docs/ (docs/zh/ left out)."""
    return sorted(
        path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")
        if ZH_DIR not in path.parents
    )


def chinese_pages() -> list[str]:
    return sorted(path.relative_to(ZH_DIR).as_posix() for path in ZH_DIR.rglob("*.md"))


def en(page: str) -> str:
    return f"docs/{page}"


def zh(page: str) -> str:
    return f"docs/zh/{page}"


PAGES = english_pages()
LANGUAGES = (en, zh)


@cache
def text(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def _cells(line: str) -> Row:
    cells = _CELL_SPLIT.split(line.strip())
    return [cell.strip() for cell in cells[1:-1]]


@cache
def tables(name: str) -> list[Table]:
    """The body rows (header and separator left out) of every Markdown table outside code."""
    found: list[Table] = []
    current: list[str] = []
    fenced = False

    def close() -> None:
        if len(current) > 2:
            found.append([_cells(line) for line in current[2:]])
        current.clear()

    for line in text(name).splitlines():
        if _FENCE.match(line):
            close()
            fenced = not fenced
            continue
        if not fenced and line.lstrip().startswith("|"):
            current.append(line)
        else:
            close()
    close()
    return found


def _kind(row: Row) -> str | None:
    first = row[0] if row else ""
    if first.startswith("`/"):
        return "chat"
    if first.startswith("`alpaca-bot"):
        return "cli"
    if first.startswith("`alpaca_bot_"):
        return "metrics"
    if len(row) > 1 and _CONFIG_KEY.fullmatch(first) and _ENV_VAR.fullmatch(row[1]):
        return "config"
    return None


def tables_of(name: str, kind: str) -> list[Table]:
    """The tables whose first body row is of `kind`; every row of them must be of it too."""
    chosen = [table for table in tables(name) if _kind(table[0]) == kind]
    for table in chosen:
        strays = [row[0] for row in table if _kind(row) != kind]
        assert not strays, f"{name}: rows in a {kind} table that do not look like one: {strays}"
    return chosen


def rows_of(kind: str, language: object = en) -> list[tuple[str, Row]]:
    """Every row of every `kind` table in one language's pages, with the page it is on."""
    assert language in LANGUAGES
    return [(page, row) for page in PAGES for table in tables_of(language(page), kind)  # type: ignore[operator]
            for row in table]


def _difference(what: str, page: str, en_items: list[str], zh_items: list[str]) -> str:
    en_count, zh_count = Counter(en_items), Counter(zh_items)
    missing = sorted((en_count - zh_count).elements())
    extra = sorted((zh_count - en_count).elements())
    parts = [f"{what} differ between {en(page)} and {zh(page)}"]
    if missing:
        parts.append(f"missing from {zh(page)}: {missing}")
    if extra:
        parts.append(f"missing from {en(page)} (only in {zh(page)}): {extra}")
    if not missing and not extra:
        parts.append(f"same entries, different order:\n  en: {en_items}\n  zh: {zh_items}")
    return "; ".join(parts)


# -- the pages ----------------------------------------------------------------------------------


def test_every_page_has_its_chinese_twin() -> None:
    assert PAGES, "docs/ has no pages"
    missing = sorted(set(PAGES) - set(chinese_pages()))
    extra = sorted(set(chinese_pages()) - set(PAGES))
    assert not missing, f"English pages without a Chinese twin in docs/zh/: {missing}"
    assert not extra, f"Chinese pages without an English original in docs/: {extra}"


@pytest.mark.parametrize("kind", ["chat", "cli", "metrics", "config"])
@pytest.mark.parametrize("page", PAGES)
def test_the_twins_have_the_same_tables(page: str, kind: str) -> None:
    en_tables, zh_tables = tables_of(en(page), kind), tables_of(zh(page), kind)
    assert len(en_tables) == len(zh_tables), (
        f"{en(page)} has {len(en_tables)} {kind} tables, {zh(page)} {len(zh_tables)}"
    )
    for en_table, zh_table in zip(en_tables, zh_tables, strict=True):
        en_first, zh_first = [row[0] for row in en_table], [row[0] for row in zh_table]
        assert en_first == zh_first, _difference(f"the {kind} table's first column", page,
                                                 en_first, zh_first)
        if kind in ("chat", "config"):  # the llama.cpp flag / the environment variable
            en_second, zh_second = [row[1] for row in en_table], [row[1] for row in zh_table]
            assert en_second == zh_second, _difference(f"the {kind} table's second column",
                                                       page, en_second, zh_second)


# -- chat commands ------------------------------------------------------------------------------


def chat_command_names(language: object) -> list[str]:
    """Every command name of the commands tables' first column (`/help`, `/start` are two)."""
    return [found for _, row in rows_of("chat", language) for found in _CHAT_COMMAND.findall(row[0])]


@pytest.mark.parametrize("language", LANGUAGES, ids=["en", "zh"])
def test_every_documented_chat_command_exists(language: object) -> None:
    known = {command_name for command in COMMANDS for command_name in command.names}
    unknown = sorted({f"/{found}" for found in chat_command_names(language)} - {f"/{k}" for k in known})
    assert not unknown, f"the docs document chat commands the bot does not have: {unknown}"


@pytest.mark.parametrize("language", LANGUAGES, ids=["en", "zh"])
def test_every_telegram_command_is_documented(language: object) -> None:
    documented = set(chat_command_names(language))
    missing = sorted(
        f"/{command_name}"
        for command in COMMANDS if "telegram" in command.fronts
        for command_name in command.names if command_name not in documented
    )
    assert not missing, f"the docs' commands tables lack Telegram commands of the bot: {missing}"


# -- configuration ------------------------------------------------------------------------------


def config_rows(language: object) -> list[tuple[str, str]]:
    return [(_CONFIG_KEY.fullmatch(row[0]).group(1), _ENV_VAR.fullmatch(row[1]).group(1))  # type: ignore[union-attr]
            for _, row in rows_of("config", language)]


@pytest.mark.parametrize("language", LANGUAGES, ids=["en", "zh"])
def test_every_documented_config_key_exists(language: object) -> None:
    prefix = Settings.model_config.get("env_prefix", "")
    fields = Settings.model_fields
    for key, env in config_rows(language):
        assert key in fields, f"the docs document the config key {key!r}, which Settings lacks"
        alias = fields[key].validation_alias
        expected = alias if isinstance(alias, str) else f"{prefix}{key}".upper()
        assert env == expected, f"the docs: the key {key!r} is set by {expected}, not {env}"


@pytest.mark.parametrize("language", LANGUAGES, ids=["en", "zh"])
def test_every_config_key_is_documented(language: object) -> None:
    documented = {key for key, _ in config_rows(language)}
    missing = sorted(set(Settings.model_fields) - NOT_CONFIG_KEYS - documented)
    assert not missing, f"the docs' configuration tables lack keys of Settings: {missing}"


# -- the alpaca-bot commands --------------------------------------------------------------------


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(
        action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )


def cli_commands(language: object) -> list[str]:
    """`alpaca-bot quantize` and the like, one per mention in the tables' first column."""
    return [
        f"alpaca-bot {word}".strip()
        for _, row in rows_of("cli", language) for word in _CLI_COMMAND.findall(row[0])
    ]


@pytest.mark.parametrize("language", LANGUAGES, ids=["en", "zh"])
def test_every_documented_alpaca_bot_command_exists(language: object) -> None:
    subcommands = _subcommands()
    unknown = sorted({
        command for command in cli_commands(language)
        if command != "alpaca-bot" and command.removeprefix("alpaca-bot ") not in subcommands
    })
    assert not unknown, f"the docs document alpaca-bot commands the CLI does not have: {unknown}"


@pytest.mark.parametrize("language", LANGUAGES, ids=["en", "zh"])
def test_every_alpaca_bot_command_is_documented(language: object) -> None:
    documented = {command.removeprefix("alpaca-bot ") for command in cli_commands(language)}
    missing = sorted(set(_subcommands()) - documented)
    assert not missing, f"the docs' alpaca-bot table lacks subcommands of the CLI: {missing}"


# -- metrics ------------------------------------------------------------------------------------


def documented_metrics(language: object) -> set[str]:
    return {found for _, row in rows_of("metrics", language) for found in _METRIC.findall(row[0])}


def declared_metrics() -> set[str]:
    """The names /metrics exposes, as bot/metrics.py declares them (a counter gets `_total`,
    an info metric `_info`)."""
    suffix = {"Counter": "_total", "InfoMetricFamily": "_info"}
    return {
        name + suffix.get(maker, "")
        for maker, name in _DECLARED_METRIC.findall(METRICS_SOURCE.read_text(encoding="utf-8"))
    }


def test_the_metrics_are_found_in_the_source() -> None:
    declared = declared_metrics()
    assert "alpaca_bot_replies_total" in declared and "alpaca_bot_model_info" in declared, declared


@pytest.mark.parametrize("language", LANGUAGES, ids=["en", "zh"])
def test_every_metric_is_documented_and_exists(language: object) -> None:
    documented, declared = documented_metrics(language), declared_metrics()
    assert not declared - documented, f"metrics the docs lack: {sorted(declared - documented)}"
    assert not documented - declared, (
        f"the docs document metrics the bot does not have: {sorted(documented - declared)}"
    )


# -- the site -----------------------------------------------------------------------------------


def test_the_site_builds_with_no_broken_link_or_anchor(tmp_path: Path) -> None:
    """What CI's `make docs` checks, here too: mkdocs --strict fails on a link to a page that
    does not exist, an anchor no heading makes, or a page left out of the navigation."""
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
         str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stderr}"
    assert (tmp_path / "site" / "zh" / "getting-started" / "index.html").is_file()


@pytest.mark.parametrize("language", LANGUAGES, ids=["en", "zh"])
def test_every_benchmark_is_on_the_performance_page(language: object) -> None:
    page = text(language("performance.md"))  # type: ignore[operator]
    scripts = sorted(path.name for path in (ROOT / "bench").glob("*.py") if path.name != "__init__.py")
    missing = [name for name in scripts if f"bench/{name}" not in page]
    assert not missing, f"the performance page says nothing of {missing}: what they measure, and their figures"
