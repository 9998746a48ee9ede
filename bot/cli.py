"""The `alpaca-bot` command: thin subcommands over the runtime, the bot and the model tools."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import __version__
from bot.core.knobs import BY_NAME, KNOBS
from bot.errors import AlpacaBotError, UserError
from bot.i18n import N_, SOURCE, _, languages, locale_language, speaking
from bot.settings import Settings, load_settings

if TYPE_CHECKING:
    from bot.engine.base import Engine

log = logging.getLogger("alpaca_bot")

NO_TOKEN_HINT = N_(
    "No Telegram token is configured, so this is the console chat.\n"
    "To run the Telegram bot: create a bot with @BotFather, then\n"
    "    export ALPACA_BOT_TOKEN=123456:ABC...   (or set `token` in your config file)\n"
    "and start again (`make run` or `alpaca-bot run`)."
)
"""The console's first lines when `start` finds no token (in the console's language)."""
LANGUAGE_CHOICES = ("auto", *languages())
"""--lang: the console's language; auto follows the locale (LANGUAGE, LC_ALL, LC_MESSAGES,
LANG). The CLI's own output stays English."""


class RedactToken(logging.Filter):
    """Keeps the bot token out of every log line (httpx logs request URLs)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        if self._token:
            message = record.getMessage()
            if self._token in message:
                record.msg = message.replace(self._token, "<token>")
                record.args = None
        return True


def setup_logging(settings: Settings, *, quiet: bool = False) -> logging.Handler:
    level = logging.WARNING if quiet else getattr(logging, settings.log_level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if settings.token is not None:
        handler.addFilter(RedactToken(settings.token.get_secret_value()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "telegram.ext.ExtBot", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # In the terminal commands our own one-line errors say it; the service log keeps llama.cpp's.
    logging.getLogger("llama.cpp").setLevel(logging.CRITICAL if quiet else max(level, logging.WARNING))
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    return handler


# -- subcommands ----------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from bot.store.database import migrate

    settings.data.mkdir(parents=True, exist_ok=True)
    migrate(settings.database_url)
    print(f"database is up to date: {_safe_url(settings.database_url)}")
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.engine import make_url

    from bot.models.progress import format_bytes
    from bot.store.backup import backup_sqlite, pg_dump_command, sqlite_path

    url = settings.database_url
    source = sqlite_path(url)
    if source is None:
        if make_url(url).get_backend_name() == "postgresql":
            raise UserError("the database is PostgreSQL, which alpaca-bot does not copy itself; "
                            f"back it up with: {pg_dump_command(url, args.file)}")
        raise UserError(f"cannot back up {_safe_url(url)}: only a SQLite file is copied")
    report = backup_sqlite(source, args.file, force=args.force)
    print(f"backed up {source} to {report.target} ({format_bytes(report.size)}): "
          f"{report.chats} chats, {report.turns} turns")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    text = asyncio.run(_export(settings, args.chat_id, args.format))
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    from bot.chat.export import write_export

    try:
        write_export(args.output, text)
    except OSError as exc:
        raise UserError(f"cannot write {args.output}: {exc.strerror}") from None
    print(f"wrote chat {args.chat_id} to {args.output} ({args.format})", file=sys.stderr)
    return 0


async def _export(settings: Settings, chat_id: int, fmt: Any) -> str:
    from sqlalchemy.exc import DBAPIError

    from bot.chat.export import export_chat
    from bot.store.backup import sqlite_path
    from bot.store.database import open_database, sessions

    url = settings.database_url
    source = sqlite_path(url)
    if source is not None and not source.is_file():
        raise UserError(f"no database at {source}")
    database = open_database(url)
    try:
        return await export_chat(sessions(database), chat_id, fmt)
    except (DBAPIError, OSError) as exc:
        raise UserError(f"cannot read {_safe_url(url)}: {getattr(exc, 'orig', exc)} "
                        "(alpaca-bot migrate brings an older database up to date)") from None
    finally:
        await database.dispose()


def cmd_access(args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(_access(settings, args.action, getattr(args, "id", None))))
    return 0


async def _access(settings: Settings, action: str, some_id: int | None) -> str:
    """`alpaca-bot access list|allow ID|deny ID`, on the database the bot uses (a running bot
    sees the change at the next message)."""
    from bot.chat.access import AccessControl, parse_id
    from bot.store.database import migrate_async, open_database, sessions

    settings.data.mkdir(parents=True, exist_ok=True)
    await migrate_async(settings.database_url)
    database = open_database(settings.database_url)
    try:
        control = AccessControl(settings=settings, sessions=sessions(database))
        if action == "list":
            return await control.listing()
        chosen = parse_id(str(some_id), action)
        if action == "allow":
            return await control.allow(chosen)
        return await control.deny(chosen)
    finally:
        await database.dispose()


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from bot.ops.doctor import run_doctor

    return run_doctor(settings, sys.stdout)


def cmd_convert(args: argparse.Namespace, settings: Settings) -> int:
    from bot.models.convert import convert_checkpoint
    from bot.models.progress import format_bytes

    report = convert_checkpoint(
        args.dir, args.outfile, outtype=args.outtype, chat_template=args.chat_template
    )
    p = report.params
    print(
        f"wrote {report.outfile} ({report.outtype}, {format_bytes(report.bytes_written)}, "
        f"{report.n_tensors} tensors) from a {report.layout} checkpoint in {report.seconds:.1f} s: "
        f"{p.n_layer} layers, dim {p.n_embd}, {p.n_head} heads ({p.n_head_kv} kv), "
        f"vocab {p.n_vocab}, context {p.n_ctx}"
    )
    return 0


def cmd_quantize(args: argparse.Namespace, settings: Settings) -> int:
    from bot.models.progress import format_bytes
    from bot.models.quant_types import parse_quant_type
    from bot.models.quantize import quantize_model
    from bot.models.quantizer_process import QuantizeProgress

    if args.auto:
        return cmd_quantize_auto(args, settings)
    if args.outfile is None or args.type is None:
        raise UserError("quantize needs IN.gguf OUT.gguf TYPE (or IN.gguf --auto)")
    qtype = parse_quant_type(args.type)
    if args.outfile.exists() and not args.force and args.outfile.resolve() != args.infile.resolve():
        raise UserError(f"{args.outfile} exists; pass --force to replace it")
    tty = sys.stderr.isatty()
    shown = {"tenth": -1}

    def progress(p: QuantizeProgress) -> None:
        eta = f", ~{p.eta:.0f} s left" if p.eta is not None else ""
        line = (f"[{p.tensor_index:>4}/{p.tensor_count}] {p.fraction:4.0%} {p.tensor_name}"
                f" ({p.elapsed:.0f} s{eta})")
        if tty:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
        elif int(p.fraction * 10) > shown["tenth"]:  # a log or a pipe: every 10%
            shown["tenth"] = int(p.fraction * 10)
            print(line, file=sys.stderr)

    result = quantize_model(
        args.infile, args.outfile, qtype, threads=args.threads,
        allow_requantize=args.allow_requantize, on_progress=progress,
    )
    if tty:
        sys.stderr.write("\n")
    print(
        f"wrote {result.output}: {qtype.label}, {format_bytes(result.size_before)} → "
        f"{format_bytes(result.size_after)} ({result.ratio:.0%}), {result.tensor_count} tensors "
        f"in {result.seconds:.1f} s"
    )
    return 0


def cmd_quantize_auto(args: argparse.Namespace, settings: Settings) -> int:
    from bot.models.auto_plan import DEFAULT_TYPES, AutoQuantizeOptions, plan_auto_quantize
    from bot.models.memory_budget import default_budget
    from bot.models.perplexity import load_sample_text
    from bot.models.quant_types import parse_quant_type
    from bot.quantize.console import run_in_terminal

    if args.outfile is not None:
        raise UserError("--auto names its outputs itself (next to the input); give only IN.gguf")
    text, text_name = load_sample_text(), "the shipped sample text"
    if args.text is not None:
        try:
            text, text_name = args.text.read_text(encoding="utf-8"), str(args.text)
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {args.text}: {exc}") from None
    budget = default_budget() if args.budget_mb is None else args.budget_mb * 1_000_000
    options = AutoQuantizeOptions(
        types=tuple(parse_quant_type(t) for t in (args.types or DEFAULT_TYPES)),
        budget_bytes=budget, text=text, text_name=text_name, n_ctx=args.ctx_size,
        chunks=args.chunks, threads=args.threads or settings.threads,
        slots=settings.slots if settings.engine == "pool" else 1, max_ctx=settings.max_ctx,
        kv_type=settings.kv_type, keep_all=args.keep_all,
        allow_requantize=args.allow_requantize, replace=args.force,
    )
    plan = plan_auto_quantize(args.infile, options)
    # The table says what each step did: the log keeps to warnings unless -v.
    quieted = [] if args.verbose else [logging.getLogger(n) for n in ("bot.models", "matplotlib")]
    levels = [logger.level for logger in quieted]
    for logger in quieted:
        logger.setLevel(logging.WARNING)
    try:
        run_in_terminal(plan)
    finally:
        for logger, level in zip(quieted, levels, strict=True):
            logger.setLevel(level)
    return 0


def cmd_perplexity(args: argparse.Namespace, settings: Settings) -> int:
    from bot.models.perplexity import chunk_printer, compute_perplexity, load_sample_text

    if args.file is None:
        text = load_sample_text()
    else:
        try:
            text = args.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {args.file}: {exc}") from None
    print(f"perplexity of {args.model.name} on "
          f"{args.file or 'the shipped sample text'}, -c {args.ctx_size}:")
    result = compute_perplexity(
        args.model, text, n_ctx=args.ctx_size, n_batch=args.batch_size,
        threads=args.threads or settings.threads, on_chunk=chunk_printer(sys.stdout),
    )
    print(result.summary())
    print(f"({result.n_chunks} chunks, {result.n_tokens_scored} tokens scored, "
          f"{result.seconds:.1f} s)")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run_bot(settings))


def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    """`make run`: the Telegram bot when a token is configured, else the console chat."""
    if settings.token is not None:
        return asyncio.run(_run_bot(settings))
    return asyncio.run(_run_console(settings, color=sys.stdout.isatty(), banner=NO_TOKEN_HINT,
                                    language=_console_language(args)))


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run_console(settings, color=args.color, prompt_file=args.file, flags=args,
                                    language=_console_language(args)))


def _console_language(args: argparse.Namespace) -> str:
    chosen = getattr(args, "lang", "auto")  # `alpaca-bot` alone runs start without its flags
    return locale_language() if chosen == "auto" else str(chosen)


async def _run_bot(settings: Settings, *, engine: Engine | None = None) -> int:
    """The Telegram bot until SIGINT/SIGTERM; `engine` serves instead of loading the model.

    Under systemd (Type=notify) it reports its progress, READY once updates arrive, watchdog
    pings from the event loop for as long as it runs, and STOPPING.
    """
    from bot.ops.runtime import open_runtime
    from bot.ops.systemd import SystemdNotifier
    from bot.store.instance_lock import hold_instance_lock
    from bot.telegram.app import check_telegram, run_telegram

    notifier = SystemdNotifier.from_environment()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        async with notifier.watchdog():
            # One bot per database, checked before the model loads: a second one stops at once.
            async with hold_instance_lock(settings.database_url):
                notifier.status("connecting to the Telegram Bot API")
                username = await check_telegram(settings)
                log.info("connected to the Bot API as @%s", username)
                notifier.status("loading the model")
                async with open_runtime(settings, engine=engine) as runtime:
                    await run_telegram(settings, runtime.service, stop, notifier=notifier)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
    return 0


async def _run_console(
    settings: Settings,
    *,
    color: bool,
    banner: str | None = None,
    prompt_file: Path | None = None,
    flags: argparse.Namespace | None = None,
    language: str = SOURCE,
) -> int:
    """`banner`: an English message (`N_`), shown in `language`."""
    from bot.console import CONSOLE_CHAT, run_console
    from bot.ops.runtime import open_runtime

    async with open_runtime(settings) as runtime:
        service = runtime.service
        if flags is not None:
            # Flags given on the command line are stored for the console chat, like a /command.
            for knob in KNOBS:
                value = getattr(flags, knob.name, None)
                if value is not None:
                    await service.chat_settings.change(CONSOLE_CHAT, knob, str(value))
        if prompt_file is not None:
            try:
                text = await asyncio.to_thread(prompt_file.read_text, encoding="utf-8")
            except OSError as exc:
                raise UserError(f"cannot read prompt file {prompt_file}: {exc.strerror}") from None
            await service.chat_settings.set_system(CONSOLE_CHAT, text)
        info = runtime.engine.info
        header = f"alpaca-bot {__version__} — model {info.name} ({info.path.name})"
        with speaking(language):
            intro = f"{_(banner)}\n\n{header}" if banner else header
        await run_console(service, color=color, banner=intro, language=language)
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alpaca-bot",
        description="A Telegram chatbot running a quantized LLaMA/Alpaca model on the CPU.",
    )
    parser.add_argument("--version", action="version", version=f"alpaca-bot {__version__}")
    parser.add_argument("--config", type=Path, help="TOML config file (or $ALPACA_BOT_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    start = commands.add_parser("start", help="migrate, then run the Telegram bot (or the console "
                                              "chat when no token is set); the default")
    start.add_argument("--lang", choices=LANGUAGE_CHOICES, default="auto",
                       help="the console chat's language (auto: the locale's)")
    commands.add_parser("run", help="run the Telegram bot")
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

    perplexity = commands.add_parser(
        "perplexity", help="measure a model's perplexity on a text (llama.cpp's method)"
    )
    perplexity.add_argument("model", type=Path, help="GGUF model file")
    perplexity.add_argument("-f", "--file", type=Path,
                            help="UTF-8 text file (default: the sample text shipped with alpaca-bot)")
    perplexity.add_argument("-c", "--ctx-size", type=int, default=512, help="chunk size (512)")
    perplexity.add_argument("-b", "--batch-size", type=int, default=512, help="batch size (512)")
    perplexity.add_argument("-t", "--threads", type=int, help="threads (default: physical cores)")

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
    return parser


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


if __name__ == "__main__":
    sys.exit(main())
