"""The command line: subcommands, their flags (the chat's come from the knob table), and
what they override in the settings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bot import __version__
from bot.core.knobs import BY_NAME, KNOBS
from bot.errors import UserError
from bot.i18n import languages

LANGUAGE_CHOICES = ("auto", *languages())
"""--lang: the console's language; auto follows the locale (LANGUAGE, LC_ALL, LC_MESSAGES,
LANG). The CLI's own output stays English."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alpaca-bot",
        description="A Telegram chatbot running a quantized LLaMA/Alpaca model on the CPU.",
    )
    parser.add_argument("--version", action="version", version=f"alpaca-bot {__version__}")
    parser.add_argument("--config", type=Path, help="TOML config file (or $ALPACA_BOT_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_running(commands)
    _add_data(commands)
    _add_model_tools(commands)
    return parser


Subcommands = Any
"""What `add_subparsers` returns (argparse's private `_SubParsersAction`)."""


def _add_running(commands: Subcommands) -> None:
    """start, run and chat: the subcommands that run the bot or its console."""
    start = commands.add_parser("start", help="migrate, then run the Telegram bot (or the console "
                                              "chat when no token is set); the default")
    start.add_argument("--lang", choices=LANGUAGE_CHOICES, default="auto",
                       help="the console chat's language (auto: the locale's)")
    commands.add_parser("run", help="run the Telegram bot")
    chat = commands.add_parser("chat", help="chat in the terminal, like llama.cpp's main -ins")
    chat.add_argument("-m", "--model", type=Path, help="GGUF model file")
    for knob in KNOBS:  # the chat's knobs, with llama.cpp's spellings of their flags
        chat.add_argument(*knob.cli_flags, dest=knob.name, type=knob.python_type,
                          choices=knob.choices or None, metavar=knob.metavar,
                          help=f"{knob.help} (/{knob.command})")
    chat.add_argument("-t", "--threads", type=int, help="CPU threads (default: physical cores)")
    chat.add_argument("-b", "--batch-size", type=int, help="prompt batch size")
    chat.add_argument("-f", "--file", type=Path, help="prompt file: the system prompt/preamble")
    chat.add_argument("--color", action="store_true", help="colour the input and the output")
    chat.add_argument("-s", "--seed", type=int, help="random seed (-1: random)")
    chat.add_argument("--lang", choices=LANGUAGE_CHOICES, default="auto",
                      help="the language of the console's texts (auto: the locale's)")


def _add_data(commands: Subcommands) -> None:
    """migrate, doctor, backup, export and access: the database and the installation."""
    commands.add_parser("migrate", help="upgrade the database to the newest schema")
    commands.add_parser("doctor", help="check the config, model, database, disk and token; "
                                       "say what is wrong and how to fix it")
    backup = commands.add_parser(
        "backup", help="copy the SQLite database, also while the bot runs (PostgreSQL: says "
                       "how to use pg_dump)",
    )
    backup.add_argument("file", type=Path, help="the copy to write")
    backup.add_argument("--force", action="store_true", help="replace an existing file")
    export = commands.add_parser("export", help="print one chat's stored conversation")
    export.add_argument("chat_id", type=int, help="the chat's id (groups are negative)")
    export.add_argument("--format", choices=("jsonl", "md"), default="jsonl",
                        help="jsonl: one JSON object a turn (default); md: readable Markdown")
    export.add_argument("-o", "--output", type=Path, help="write to this file, not stdout")
    access = commands.add_parser(
        "access", help="who may use the bot: list, allow ID, deny ID (a user's or a group's id)"
    )
    actions = access.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the ids allowed and denied, and the requests waiting")
    for action, text in (("allow", "let a user or a group use the bot"),
                         ("deny", "take access away from a user or a group")):
        choice = actions.add_parser(action, help=text)
        choice.add_argument("id", type=int, help="a user's id, or a group's (negative)")


def _add_model_tools(commands: Subcommands) -> None:
    """convert, quantize and perplexity."""
    convert = commands.add_parser(
        "convert", help="convert a Meta (consolidated.*.pth) or Hugging Face LLaMA checkpoint "
                        "to GGUF",
    )
    convert.add_argument("dir", type=Path, help="checkpoint folder (params.json or config.json, "
                                                 "weights, tokenizer.model)")
    convert.add_argument("--outfile", type=Path, required=True, help="the GGUF file to write")
    convert.add_argument("--outtype", choices=("f16", "f32", "q8_0"), default="f16",
                         help="tensor type of the output (default f16)")
    convert.add_argument("--chat-template", default="alpaca",
                         help="chat template to embed: alpaca (default), none, or a Jinja file")
    perplexity = commands.add_parser(
        "perplexity", help="measure a model's perplexity on a text (llama.cpp's method)"
    )
    perplexity.add_argument("model", type=Path, help="GGUF model file")
    perplexity.add_argument("-f", "--file", type=Path,
                            help="UTF-8 text file (default: the sample text shipped with alpaca-bot)")
    perplexity.add_argument("-c", "--ctx-size", type=int, default=512, help="chunk size (512)")
    perplexity.add_argument("-b", "--batch-size", type=int, default=512, help="batch size (512)")
    perplexity.add_argument("-t", "--threads", type=int, help="threads (default: physical cores)")
    _add_quantize(commands)


def _add_quantize(commands: Subcommands) -> None:
    """quantize, by type or --auto (measuring each type here)."""
    quantize = commands.add_parser(
        "quantize", help="quantize a GGUF file with llama.cpp's quantizer (q4_0, q4_1, q4_k_m, ...)"
    )
    quantize.add_argument("infile", type=Path, help="input GGUF (f16/f32/bf16)")
    quantize.add_argument("outfile", type=Path, nargs="?", help="output GGUF")
    quantize.add_argument("type", nargs="?",
                          help="q4_0, q4_1, q5_0, q5_1, q8_0, q4_k_m, q5_k_m, q6_k, ... "
                               "or llama.cpp's number (2 = q4_0, 3 = q4_1)")
    quantize.add_argument("-t", "--threads", type=int,
                          help="threads (default: all; --auto measures with `threads`)")
    quantize.add_argument("--allow-requantize", action="store_true",
                          help="allow an already quantized input (loses quality)")
    quantize.add_argument("--force", action="store_true", help="replace an existing output")
    auto = quantize.add_argument_group(
        "--auto", "try several types, measure each here, keep the best that fits the memory")
    auto.add_argument("--auto", action="store_true", help="choose the type by measurement")
    auto.add_argument("--types", nargs="+", metavar="TYPE",
                      help="types to try (default: q4_0 q4_1 q5_0 q5_1 q8_0 q4_k_m q5_k_m q6_k)")
    auto.add_argument("--budget-mb", type=int, metavar="MB",
                      help="memory for the model and its KV cache (default: available minus 10%%)")
    auto.add_argument("--text", type=Path, help="text for perplexity (default: the shipped sample)")
    auto.add_argument("--chunks", type=int, metavar="N", help="at most N perplexity chunks")
    auto.add_argument("-c", "--ctx-size", type=int, default=512, help="perplexity chunk size (512)")
    auto.add_argument("--keep-all", action="store_true",
                      help="keep every measured file, not only the chosen one")


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.command == "chat":
        overrides.update(
            model=args.model, threads=args.threads, batch=args.batch_size, seed=args.seed
        )
        if args.n_ctx is not None:
            # -c sizes the model's context too, as it does for llama.cpp.
            minimum = BY_NAME["n_ctx"].minimum
            if args.n_ctx < minimum:
                raise UserError(f"-c {args.n_ctx} is too small: the context needs at least "
                                f"{minimum:.0f} tokens")
            overrides["max_ctx"] = args.n_ctx
    if args.verbose:
        overrides["log_level"] = "DEBUG"
    return overrides
