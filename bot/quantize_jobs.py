"""`/quantize` jobs: one at a time, in the background, recorded in the database.

A job quantizes the configured f16 source (or a named file of the models directory) into the
models directory with llama.cpp's quantizer in a child process, reporting progress as it goes.
A restart in the middle leaves the job `running` in the database; the next start marks it
`interrupted` and tells the chat that asked. `/quantize auto` (`bot.auto_quantize_job`) runs in
the same single place, and `/quantize cancel` stops either kind.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.auto_quantize_job import AutoJobRun, describe, remove_leftovers
from bot.errors import ModelError, QuantizeCancelled, QuantizeError, UserError
from bot.i18n import _
from bot.metrics import Metrics
from bot.models.auto_quantize import AutoPlan
from bot.models.auto_report import AutoQuantizeReport
from bot.models.gguf_file import read_gguf_info
from bot.models.library import find_model
from bot.models.progress import format_bytes
from bot.models.quant_types import QuantType, parse_quant_type
from bot.models.quantize import quantize_model_async
from bot.models.quantize_output import default_output_path
from bot.models.quantizer_process import QuantizeProgress
from bot.settings import Settings
from bot.store.jobs import add_quantize_job, finish_quantize_job, interrupt_running_jobs
from bot.store.schema import QuantizeJobRow

log = logging.getLogger(__name__)

DEFAULT_TYPE = "q4_0"
Report = Callable[[str], Awaitable[None]]
AutoFinish = Callable[[str, AutoQuantizeReport | None], Awaitable[None]]
"""Called once an auto job ended: the final text, and the report when it succeeded."""


@dataclass(frozen=True)
class JobRequest:
    source: Path
    target: Path
    qtype: QuantType


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def progress_text(request: JobRequest, progress: QuantizeProgress) -> str:
    values = {
        "file": request.source.name, "qtype": request.qtype.label,
        "index": progress.tensor_index, "count": progress.tensor_count,
        "percent": f"{progress.fraction:.0%}", "elapsed": format_duration(progress.elapsed),
    }
    if progress.eta is None:
        return _("Quantizing {file} → {qtype}: tensor {index}/{count} ({percent}), "
                 "{elapsed} elapsed", **values)
    return _("Quantizing {file} → {qtype}: tensor {index}/{count} ({percent}), "
             "{elapsed} elapsed, ~{left} left", left=format_duration(progress.eta), **values)


class QuantizeJobs:
    """Starts, tracks and records quantization jobs."""

    def __init__(
        self, *, settings: Settings, sessions: async_sessionmaker[AsyncSession],
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._metrics = metrics
        self._running: tuple[int, str] | None = None
        """The job running: its id and what it is (`tiny-f16.gguf → q4_0`)."""
        self._last: QuantizeProgress | None = None
        self._auto: AutoJobRun | None = None
        self._cancel: threading.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self._running is not None

    def plan(self, argument: str) -> JobRequest:
        """Parse `/quantize [TYPE] [FILE]` into what to do, checking it can be done."""
        parts = argument.split()
        qtype = parse_quant_type(parts[0] if parts else DEFAULT_TYPE)
        models = self._settings.models_directory
        if len(parts) > 1:
            source = find_model(models, " ".join(parts[1:])).path
        elif self._settings.quantize_source is not None:
            source = self._settings.quantize_source
        else:
            raise UserError(_(
                "No source to quantize: set `quantize_source` (an f16 GGUF) in the config, or "
                "name a file of the models directory: /quantize q4_0 FILE"
            ))
        target = models / default_output_path(source, qtype).name
        if target.resolve() == source.resolve():
            raise UserError(_("{file} is already {qtype}.", file=source.name, qtype=qtype.label))
        return JobRequest(source, target, qtype)

    async def start(
        self, request: JobRequest, *, user_id: int | None, chat_id: int | None,
        report: Report, finish: Report,
    ) -> int:
        """Record and start a job; progress goes to `report`, the outcome to `finish`."""
        self._check_free()
        async with self._sessions() as session:
            row = await add_quantize_job(
                session, requested_by=user_id, chat_id=chat_id, source=str(request.source),
                target=str(request.target), qtype=request.qtype.label,
            )
            await session.commit()
            job_id = row.id
        self._running = (job_id, f"{request.source.name} → {request.qtype.label}")
        self._last = None
        self._cancel = threading.Event()
        self._task = asyncio.create_task(self._run(job_id, request, report, finish))
        return job_id

    def _check_free(self) -> None:
        if self._running is None:
            return
        _job_id, current = self._running
        step = self._auto.at_step() if self._auto is not None else None
        if step is not None:
            raise UserError(_(
                "A quantization is already running ({job}, step {step}/{steps}); wait for it to "
                "finish, or stop it with /quantize cancel.", job=current, step=step[0],
                steps=step[1],
            ))
        if self._auto is None and self._last is not None:
            raise UserError(_(
                "A quantization is already running ({job}, tensor {index}/{count}); wait for it "
                "to finish, or stop it with /quantize cancel.", job=current,
                index=self._last.tensor_index, count=self._last.tensor_count,
            ))
        raise UserError(_(
            "A quantization is already running ({job}); wait for it to finish, or stop it with "
            "/quantize cancel.", job=current,
        ))

    def cancel(self) -> str:
        """`/quantize cancel`: stop the running job (its partial files are removed)."""
        if self._running is None or self._cancel is None:
            return _("Nothing to cancel: no quantization is running.")
        self._cancel.set()
        job_id, current = self._running
        return _("Cancelling quantization #{id} ({job})…", id=job_id, job=current)

    def plan_auto(self, argument: str) -> AutoPlan:
        """Parse `/quantize auto [TYPES...] [FILE]` (blocking: reads the source's header)."""
        from bot.auto_quantize_job import plan_auto_job

        return plan_auto_job(self._settings, argument)

    async def start_auto(
        self, plan: AutoPlan, *, user_id: int | None, chat_id: int | None, report: Report,
        finish: AutoFinish,
    ) -> int:
        """Record and start an auto job; its work directory is the job's target until it ends
        (so a restart can remove it), then the chosen file."""
        self._check_free()
        async with self._sessions() as session:
            row = await add_quantize_job(
                session, requested_by=user_id, chat_id=chat_id, source=str(plan.source.path),
                target=str(plan.work_dir), qtype="auto",
            )
            await session.commit()
            job_id = row.id
        self._running = (job_id, describe(plan))
        self._cancel = threading.Event()

        def show(text: str) -> None:
            asyncio.ensure_future(report(text))

        self._auto = AutoJobRun(plan, show, self._cancel)
        self._task = asyncio.create_task(self._run_auto(job_id, self._auto, finish))
        return job_id

    async def _run_auto(self, job_id: int, run: AutoJobRun, finish: AutoFinish) -> None:
        from bot.auto_quantize_job import table_text

        name = run.plan.source.path.name
        values: dict[str, Any]
        result: AutoQuantizeReport | None = None
        try:
            result = await run.run()
        except QuantizeCancelled:
            values = {"state": "cancelled", "error": "cancelled with /quantize cancel"}
            text = _("⏹ Auto-quantization of {file} cancelled; its partial files are removed.",
                     file=name)
        except (QuantizeError, ModelError, UserError) as exc:
            values = {"state": "failed", "error": str(exc)}
            text = _("❌ Auto-quantization of {file} failed: {error}", file=name, error=exc)
        except asyncio.CancelledError:
            await self._record(job_id, {"state": "interrupted", "error": "the bot was stopped"})
            self._end()
            raise
        except Exception as exc:  # recorded and reported, then logged with its traceback
            log.exception("auto quantization job %d failed", job_id)
            values = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
            text = _("❌ Auto-quantization of {file} failed unexpectedly; see the logs.",
                     file=name)
        else:
            chosen = result.chosen
            values = {"state": "done", "size_before": result.source_bytes,
                      "seconds": result.seconds,
                      "target": str(chosen.path if chosen and chosen.path else result.json_path)}
            if chosen is not None:
                values["size_after"] = chosen.size_bytes
            text = table_text(result)
        await self._record(job_id, values)
        self._end()
        await finish(text, result)

    def _end(self) -> None:
        self._running = None
        self._auto = None
        self._cancel = None

    async def _run(self, job_id: int, request: JobRequest, report: Report, finish: Report) -> None:
        self._settings.models_directory.mkdir(parents=True, exist_ok=True)

        def on_progress(progress: QuantizeProgress) -> None:
            self._last = progress
            asyncio.ensure_future(report(progress_text(request, progress)))

        values: dict[str, Any]
        try:
            result = await quantize_model_async(
                request.source, request.target, request.qtype,
                threads=self._settings.threads, on_progress=on_progress, cancel=self._cancel,
            )
        except QuantizeCancelled:
            values = {"state": "cancelled", "error": "cancelled with /quantize cancel"}
            text = _("⏹ Quantizing {file} to {qtype} cancelled; nothing was written.",
                     file=request.source.name, qtype=request.qtype.label)
        except (QuantizeError, ModelError, UserError) as exc:
            values = {"state": "failed", "error": str(exc)}
            text = _("❌ Quantizing {file} to {qtype} failed: {error}",
                     file=request.source.name, qtype=request.qtype.label, error=exc)
        except asyncio.CancelledError:
            values = {"state": "interrupted", "error": "the bot was stopped"}
            await self._record(job_id, values)
            self._end()
            raise
        except Exception as exc:  # recorded and reported, then logged with its traceback
            log.exception("quantization job %d failed", job_id)
            values = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
            text = _("❌ Quantizing {file} failed unexpectedly; see the logs.",
                     file=request.source.name)
        else:
            values = {
                "state": "done", "size_before": result.size_before,
                "size_after": result.size_after, "seconds": result.seconds,
            }
            before = await asyncio.to_thread(_type_name, request.source)
            text = _(
                "✅ Quantized {file} ({size_before}, {type_before}) → {output} ({size_after}, "
                "{qtype}) in {duration}.\nFile: {path}\n{next_step}",
                file=request.source.name, size_before=format_bytes(result.size_before),
                type_before=before, output=result.output.name,
                size_after=format_bytes(result.size_after), qtype=request.qtype.label,
                duration=format_duration(result.seconds), path=result.output,
                next_step=self._next_step(result.output),
            )
        await self._record(job_id, values)
        self._end()
        await finish(text)

    def _next_step(self, output: Path) -> str:
        if self._settings.engine == "remote":
            return _("The replies come from the model servers, so /model cannot load it: serve "
                     "it with llama-server -m {path} to use it.", path=output)
        return _("Switch to it with /model {name}", name=output.name)

    def queued_note(self) -> str:
        """What /quantize adds to its first answer (under the remote engine: where it runs)."""
        if self._settings.engine == "remote":
            return " " + _("This runs on this machine's files in {directory}, not on the model "
                           "servers.", directory=self._settings.models_directory)
        return ""

    async def _record(self, job_id: int, values: dict[str, Any]) -> None:
        if self._metrics is not None:
            self._metrics.quantize_jobs.labels(values["state"]).inc()
        async with self._sessions() as session:
            await finish_quantize_job(session, job_id, **values)
            await session.commit()

    async def interrupted_jobs(self) -> list[QuantizeJobRow]:
        """Jobs a restart cut off: mark them `interrupted` and return them (to tell the chats)."""
        async with self._sessions() as session:
            rows = await interrupt_running_jobs(session, reason="the bot restarted")
            await session.commit()
        for row in rows:
            await asyncio.to_thread(_remove_partial_files, Path(row.target))
            if row.qtype == "auto":
                await asyncio.to_thread(remove_leftovers, Path(row.target))
        return rows

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _type_name(path: Path) -> str:
    try:
        return read_gguf_info(path).file_type_name
    except ModelError:
        return "?"


def _remove_partial_files(target: Path) -> None:
    """The quantizer writes `.{name}.{random}.part` next to the target: sweep what a crash left."""
    for partial in target.parent.glob(f".{target.name}.*.part"):
        try:
            partial.unlink()
        except OSError as exc:
            log.warning("could not remove %s: %s", partial, exc)
