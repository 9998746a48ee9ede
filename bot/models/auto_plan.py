"""The plan of an auto quantization, made before anything runs: what to try and how to measure
it (`AutoQuantizeOptions`), each type sized against the memory budget (the model file plus the
KV cache of `slots × max_ctx`), and where the outputs and the hidden work directory go.
Planning reads the source's header only, so it fails fast on what can be checked.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ModelError, QuantizeError, UserError
from bot.i18n import _
from bot.llama.gguf_file import GGUFInfo, read_gguf_info
from bot.models.memory_budget import KVCacheSize, kv_cache_size
from bot.models.perplexity import check_perplexity_args
from bot.models.quant_types import QuantType, parse_quant_type
from bot.models.quantize_output import default_output_path, expected_output_size, model_stem

DEFAULT_TYPES: tuple[str, ...] = (
    "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k_m", "q5_k_m", "q6_k",
)
WORK_DIR_PREFIX = ".auto-"
WORK_DIR_SUFFIX = ".work"


@dataclass(frozen=True, kw_only=True)
class AutoQuantizeOptions:
    """What to try and how to measure; `slots`, `max_ctx` and `kv_type` size the KV cache."""

    types: tuple[QuantType, ...] = tuple(parse_quant_type(t) for t in DEFAULT_TYPES)
    budget_bytes: int
    text: str
    text_name: str = "the shipped sample text"
    n_ctx: int = 512
    chunks: int | None = None
    threads: int | None = None
    slots: int = 4
    max_ctx: int = 2048
    kv_type: str = "f16"
    keep_all: bool = False
    allow_requantize: bool = False
    replace: bool = False
    """Replace existing output files (otherwise refuse to start)."""
    output_dir: Path | None = None
    """Where the kept files, the JSON and the chart go (default: next to the source)."""


@dataclass(frozen=True)
class PlannedType:
    qtype: QuantType
    target: Path
    expected_bytes: int
    ram_bytes: int
    fits: bool


@dataclass(frozen=True)
class AutoPlan:
    source: GGUFInfo
    options: AutoQuantizeOptions
    kv: KVCacheSize
    types: tuple[PlannedType, ...]
    output_dir: Path
    work_dir: Path
    json_path: Path
    chart_path: Path

    @property
    def fitting(self) -> list[PlannedType]:
        return [t for t in self.types if t.fits]

    @property
    def steps(self) -> int:
        """Quantize + measure for each type that fits."""
        return 2 * len(self.fitting)


def plan_auto_quantize(source: Path, options: AutoQuantizeOptions) -> AutoPlan:
    """Check everything that can be checked before the run, and size each type."""
    source = Path(source).absolute()
    try:
        info = read_gguf_info(source)
    except ModelError as exc:
        raise QuantizeError(_("cannot quantize: {error}", error=exc)) from exc
    if info.quantized_types and not options.allow_requantize:
        raise QuantizeError(_(
            "{file} is already quantized ({type}); measuring types requantized from it says "
            "little about the original. Use the F16/F32 original, or pass --allow-requantize "
            "(on the command line) to do it anyway.", file=source.name, type=info.file_type_name,
        ))
    if not options.types:
        raise UserError(_("no quantization types to try"))
    check_perplexity_args(options.n_ctx, options.n_ctx, options.chunks)
    output_dir = (options.output_dir or source.parent).absolute()
    if not output_dir.is_dir():
        raise QuantizeError(_("the output directory {directory} does not exist",
                              directory=output_dir))
    kv = kv_cache_size(info, slots=options.slots, max_ctx=options.max_ctx,
                       kv_type=options.kv_type)
    planned: list[PlannedType] = []
    seen: set[QuantType] = set()
    for qtype in options.types:
        if qtype in seen:
            continue
        seen.add(qtype)
        target = output_dir / default_output_path(source, qtype).name
        if target.resolve() == source.resolve():
            raise UserError(_("{file} is already {qtype}: leave it out of the types",
                              file=source.name, qtype=qtype.label))
        if target.exists() and not options.replace:
            raise UserError(_("{path} exists; pass --force to replace it", path=target))
        expected = expected_output_size(info, qtype)
        ram = expected + kv.bytes
        planned.append(PlannedType(qtype, target, expected, ram, ram <= options.budget_bytes))
    stem = model_stem(source)
    work_dir = output_dir / f"{WORK_DIR_PREFIX}{stem}.{secrets.token_hex(4)}{WORK_DIR_SUFFIX}"
    return AutoPlan(
        source=info, options=options, kv=kv, types=tuple(planned), output_dir=output_dir,
        work_dir=work_dir, json_path=output_dir / f"{stem}-auto.json",
        chart_path=output_dir / f"{stem}-auto.png",
    )


def remove_work_dirs(directory: Path, work_dir: Path | None = None) -> list[Path]:
    """Remove what a crashed auto run left in `directory`: `work_dir`, or every work directory."""
    found = [work_dir] if work_dir is not None else list(
        directory.glob(f"{WORK_DIR_PREFIX}*{WORK_DIR_SUFFIX}"))
    removed = []
    for path in found:
        if path.is_dir() and path.name.startswith(WORK_DIR_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
