"""`alpaca-bot`: parse the command line, load the settings, run one subcommand, and turn
errors into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from bot.cli.data import cmd_access, cmd_backup, cmd_doctor, cmd_export, cmd_migrate
from bot.cli.logs import setup_logging
from bot.cli.models import cmd_convert, cmd_perplexity, cmd_quantize
from bot.cli.parser import build_parser, settings_overrides
from bot.cli.running import cmd_chat, cmd_run, cmd_start
from bot.core.knobs import BY_NAME
from bot.errors import AlpacaBotError, UserError
from bot.settings import load_settings

HANDLERS = {
    None: cmd_start,
    "start": cmd_start,
    "run": cmd_run,
    "chat": cmd_chat,
    "migrate": cmd_migrate,
    "doctor": cmd_doctor,
    "backup": cmd_backup,
    "export": cmd_export,
    "access": cmd_access,
    "convert": cmd_convert,
    "quantize": cmd_quantize,
    "perplexity": cmd_perplexity,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        settings = load_settings(args.config, **settings_overrides(args))
        if args.command == "chat" and args.n_ctx is not None:
            ctx_key = BY_NAME["n_ctx"].key
            if settings.max_ctx < settings.generation_defaults().n_ctx:
                settings = load_settings(
                    args.config, **settings_overrides(args), **{ctx_key: args.n_ctx}
                )
        setup_logging(settings, quiet=args.command in (None, "start", "chat") and not args.verbose)
        return HANDLERS[args.command](args, settings)
    except AlpacaBotError as exc:
        print(f"alpaca-bot: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UserError) else 1
    except KeyboardInterrupt:
        return 130
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
