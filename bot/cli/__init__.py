"""The `alpaca-bot` command: thin subcommands over the runtime, the bot and the model tools
(`main` parses and dispatches; `running`, `data` and `models` hold the subcommands)."""

from __future__ import annotations

from bot.cli.logs import setup_logging
from bot.cli.main import main
from bot.cli.parser import build_parser
from bot.cli.running import _run_bot

__all__ = ["_run_bot", "build_parser", "main", "setup_logging"]
