"""README.zh-CN.md keeps in step with README.md, and both with the code.

The tables are found by what their rows hold, not by their (translated) headings: a chat-command
table has rows starting with "| `/", a configuration table "| `key` | `ALPACA_BOT_KEY` |", the
`alpaca-bot` table "| `alpaca-bot", the metrics table "| `alpaca_bot_". Tables of one kind are
compared in the order they appear (the configuration table, then the webhook table).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from bot.chat.commands import COMMANDS
from bot.cli import build_parser
from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EN = "README.md"
ZH = "README.zh-CN.md"
README_FILES = (EN, ZH)

_FENCE = re.compile(r"^\s*(```|~~~)")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_CONFIG_KEY = re.compile(r"`([a-z][a-z0-9_]*)`")
_ENV_VAR = re.compile(r"`(ALPACA_BOT_[A-Z0-9_]+)`")
_CHAT_COMMAND = re.compile(r"`/([a-z_]+)")
_CLI_COMMAND = re.compile(r"`alpaca-bot(?: ([a-z]+))?")
_METRIC = re.compile(r"`(alpaca_bot_[a-z_]+)")

Row = list[str]
Table = list[Row]

# Settings fields that are not configuration keys of their own.
NOT_CONFIG_KEYS = {"config"}  # the file the settings came from: --config / ALPACA_BOT_CONFIG


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


def one_table(name: str, kind: str) -> Table:
    found = tables_of(name, kind)
    assert found, f"{name}: no {kind} table found"
    return found[0]


def _difference(what: str, en: list[str] | set[str], zh: list[str] | set[str]) -> str:
    en_count, zh_count = Counter(en), Counter(zh)
    missing = sorted((en_count - zh_count).elements())
    extra = sorted((zh_count - en_count).elements())
    parts = [f"{what} differ between {EN} and {ZH}"]
    if missing:
        parts.append(f"missing from {ZH}: {missing}")
    if extra:
        parts.append(f"missing from {EN} (only in {ZH}): {extra}")
    if not missing and not extra:
        parts.append(f"same entries, different order:\n  {EN}: {list(en)}\n  {ZH}: {list(zh)}")
    return "; ".join(parts)


# -- chat commands ------------------------------------------------------------------------------


def chat_command_names(name: str) -> list[str]:
    """Every command name of the commands table's first column (`/help`, `/start` are two)."""
    return [found for row in one_table(name, "chat") for found in _CHAT_COMMAND.findall(row[0])]


def test_the_readmes_list_the_same_chat_commands() -> None:
    en, zh = chat_command_names(EN), chat_command_names(ZH)
    assert set(en) == set(zh), _difference("chat commands", set(en), set(zh))
    en_syntax = [row[0] for row in one_table(EN, "chat")]
    zh_syntax = [row[0] for row in one_table(ZH, "chat")]
    assert en_syntax == zh_syntax, _difference("the commands table's first column", en_syntax, zh_syntax)
    en_flags = [(row[0], row[1]) for row in one_table(EN, "chat")]
    zh_flags = [(row[0], row[1]) for row in one_table(ZH, "chat")]
    assert en_flags == zh_flags, _difference(
        "the commands table's llama.cpp flags", [f"{c} {f}" for c, f in en_flags],
        [f"{c} {f}" for c, f in zh_flags],
    )


@pytest.mark.parametrize("name", README_FILES)
def test_every_documented_chat_command_exists(name: str) -> None:
    known = {command_name for command in COMMANDS for command_name in command.names}
    unknown = sorted({f"/{found}" for found in chat_command_names(name)} - {f"/{k}" for k in known})
    assert not unknown, f"{name} documents chat commands the bot does not have: {unknown}"


@pytest.mark.parametrize("name", README_FILES)
def test_every_telegram_command_is_documented(name: str) -> None:
    documented = set(chat_command_names(name))
    missing = sorted(
        f"/{command_name}"
        for command in COMMANDS if "telegram" in command.fronts
        for command_name in command.names if command_name not in documented
    )
    assert not missing, f"{name}'s commands table lacks Telegram commands of the bot: {missing}"


# -- configuration ------------------------------------------------------------------------------


def config_rows(table: Table) -> list[tuple[str, str]]:
    return [(_CONFIG_KEY.fullmatch(row[0]).group(1), _ENV_VAR.fullmatch(row[1]).group(1))  # type: ignore[union-attr]
            for row in table]


def test_the_readmes_list_the_same_config_keys() -> None:
    en_tables, zh_tables = tables_of(EN, "config"), tables_of(ZH, "config")
    assert len(en_tables) == len(zh_tables), (
        f"{EN} has {len(en_tables)} configuration tables (key | env var | ...), {ZH} {len(zh_tables)}"
    )
    assert en_tables, f"{EN}: no configuration table found"
    for index, (en_table, zh_table) in enumerate(zip(en_tables, zh_tables, strict=True), start=1):
        en, zh = config_rows(en_table), config_rows(zh_table)
        which = "the configuration table" if index == 1 else f"configuration-style table {index}"
        en_keys, zh_keys = [key for key, _ in en], [key for key, _ in zh]
        assert en_keys == zh_keys, _difference(f"the keys of {which}", en_keys, zh_keys)
        en_env, zh_env = [env for _, env in en], [env for _, env in zh]
        assert en_env == zh_env, _difference(f"the env vars of {which}", en_env, zh_env)


@pytest.mark.parametrize("name", README_FILES)
def test_every_documented_config_key_exists(name: str) -> None:
    prefix = Settings.model_config.get("env_prefix", "")
    fields = Settings.model_fields
    for table in tables_of(name, "config"):
        for key, env in config_rows(table):
            assert key in fields, f"{name} documents the config key {key!r}, which Settings lacks"
            alias = fields[key].validation_alias
            expected = alias if isinstance(alias, str) else f"{prefix}{key}".upper()
            assert env == expected, f"{name}: the key {key!r} is set by {expected}, not {env}"


@pytest.mark.parametrize("name", README_FILES)
def test_every_config_key_is_documented(name: str) -> None:
    documented = {key for key, _ in config_rows(one_table(name, "config"))}
    missing = sorted(set(Settings.model_fields) - NOT_CONFIG_KEYS - documented)
    assert not missing, f"{name}'s configuration table lacks keys of Settings: {missing}"


# -- the alpaca-bot commands --------------------------------------------------------------------


def cli_commands(name: str) -> list[str]:
    """`alpaca-bot quantize` and the like, one per mention in the table's first column."""
    return [
        f"alpaca-bot {word}".strip()
        for row in one_table(name, "cli") for word in _CLI_COMMAND.findall(row[0])
    ]


def test_the_readmes_list_the_same_alpaca_bot_commands() -> None:
    en, zh = cli_commands(EN), cli_commands(ZH)
    assert Counter(en) == Counter(zh), _difference("the alpaca-bot commands", en, zh)
    en_syntax = [row[0] for row in one_table(EN, "cli")]
    zh_syntax = [row[0] for row in one_table(ZH, "cli")]
    assert en_syntax == zh_syntax, _difference("the alpaca-bot table's first column", en_syntax, zh_syntax)


@pytest.mark.parametrize("name", README_FILES)
def test_every_documented_alpaca_bot_command_exists(name: str) -> None:
    parser = build_parser()
    subcommands = next(
        action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    unknown = sorted({
        command for command in cli_commands(name)
        if command != "alpaca-bot" and command.removeprefix("alpaca-bot ") not in subcommands
    })
    assert not unknown, f"{name} documents alpaca-bot commands the CLI does not have: {unknown}"


# -- metrics, set-up, links ---------------------------------------------------------------------


def test_the_readmes_list_the_same_metrics() -> None:
    def metrics(name: str) -> list[str]:
        return [found for row in one_table(name, "metrics") for found in _METRIC.findall(row[0])]

    en, zh = metrics(EN), metrics(ZH)
    assert en == zh, _difference("the metrics", en, zh)


def first_code_block_commands(name: str) -> list[str]:
    lines = text(name).splitlines()
    start = next((i for i, line in enumerate(lines) if _FENCE.match(line)), None)
    assert start is not None, f"{name} has no code block"
    end = next(i for i in range(start + 1, len(lines)) if _FENCE.match(lines[i]))
    return [command for line in lines[start + 1:end] if (command := line.split("#")[0].strip())]


def test_the_first_code_block_has_the_two_set_up_commands() -> None:
    en, zh = first_code_block_commands(EN), first_code_block_commands(ZH)
    assert en == ["make run", "make test"], f"{EN}'s first code block runs {en}, not make run, make test"
    assert zh == en, f"{ZH}'s first code block runs {zh}, {EN}'s {en}"


def test_the_readmes_link_to_each_other() -> None:
    assert "(README.zh-CN.md)" in text(EN), f"{EN} does not link to {ZH}"
    top = "\n".join(text(ZH).splitlines()[:5])
    assert "English: [README.md](README.md)" in top, f"{ZH} does not link back to {EN} at its top"
