"""Subcommands of the model tools: convert, quantize (by type or --auto), perplexity."""

from __future__ import annotations

import argparse
import logging
import sys

from bot.errors import UserError
from bot.settings import Settings


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
