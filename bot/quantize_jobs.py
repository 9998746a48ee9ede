"""`/quantize` jobs: one at a time, in the background, recorded in the database.

A job quantizes the configured f16 source (or a named file of the models directory) into the
models directory with llama.cpp's quantizer in a child process, reporting progress as it goes.
A restart in the middle leaves the job `running` in the database; the next start marks it
`interrupted` and tells the chat that asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import ModelError, QuantizeError, UserError
from bot.metrics import Metrics
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
    eta = f", ~{format_duration(progress.eta)} left" if progress.eta is not None else ""
    return (
        f"Quantizing {request.source.name} → {request.qtype.label}: tensor "
        f"{progress.tensor_index}/{progress.tensor_count} ({progress.fraction:.0%}), "
        f"{format_duration(progress.elapsed)} elapsed{eta}"
    )


class QuantizeJobs:
    """Starts, tracks and records quantization jobs."""

    def __init__(
        self, *, settings: Settings, sessions: async_sessionmaker[AsyncSession],
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._metrics = metrics
        self._running: tuple[int, JobRequest] | None = None
        self._last: QuantizeProgress | None = None
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
            raise UserError(
                "No source to quantize: set `quantize_source` (an f16 GGUF) in the config, or "
                "name a file of the models directory: /quantize q4_0 FILE"
            )
        target = models / default_output_path(source, qtype).name
        if target.resolve() == source.resolve():
            raise UserError(f"{source.name} is already {qtype.label}.")
        return JobRequest(source, target, qtype)

    async def start(
        self, request: JobRequest, *, user_id: int | None, chat_id: int | None,
        report: Report, finish: Report,
    ) -> int:
        """Record and start a job; progress goes to `report`, the outcome to `finish`."""
        if self._running is not None:
            _, current = self._running
            done = ""
            if self._last is not None:
                done = f", tensor {self._last.tensor_index}/{self._last.tensor_count}"
            raise UserError(
                f"A quantization is already running ({current.source.name} → "
                f"{current.qtype.label}{done}); wait for it to finish."
            )
        async with self._sessions() as session:
            row = await add_quantize_job(
                session, requested_by=user_id, chat_id=chat_id, source=str(request.source),
                target=str(request.target), qtype=request.qtype.label,
            )
            await session.commit()
            job_id = row.id
        self._running = (job_id, request)
        self._last = None
        self._task = asyncio.create_task(self._run(job_id, request, report, finish))
        return job_id

    async def _run(self, job_id: int, request: JobRequest, report: Report, finish: Report) -> None:
        self._settings.models_directory.mkdir(parents=True, exist_ok=True)

        def on_progress(progress: QuantizeProgress) -> None:
            self._last = progress
            asyncio.ensure_future(report(progress_text(request, progress)))

        values: dict[str, Any]
        try:
            result = await quantize_model_async(
                request.source, request.target, request.qtype,
                threads=self._settings.threads, on_progress=on_progress,
            )
        except (QuantizeError, ModelError, UserError) as exc:
            values = {"state": "failed", "error": str(exc)}
            text = f"❌ Quantizing {request.source.name} to {request.qtype.label} failed: {exc}"
        except asyncio.CancelledError:
            values = {"state": "interrupted", "error": "the bot was stopped"}
            await self._record(job_id, values)
            self._running = None
            raise
        except Exception as exc:  # recorded and reported, then logged with its traceback
            log.exception("quantization job %d failed", job_id)
            values = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
            text = f"❌ Quantizing {request.source.name} failed unexpectedly; see the logs."
        else:
            values = {
                "state": "done", "size_before": result.size_before,
                "size_after": result.size_after, "seconds": result.seconds,
            }
            before = await asyncio.to_thread(_type_name, request.source)
            text = (
                f"✅ Quantized {request.source.name} ({format_bytes(result.size_before)}, "
                f"{before}) → {result.output.name} ({format_bytes(result.size_after)}, "
                f"{request.qtype.label}) in {format_duration(result.seconds)}.\n"
                f"File: {result.output}\n{self._next_step(result.output)}"
            )
        await self._record(job_id, values)
        self._running = None
        await finish(text)

    def _next_step(self, output: Path) -> str:
        if self._settings.engine == "remote":
            return (f"The replies come from the model servers, so /model cannot load it: serve "
                    f"it with llama-server -m {output} to use it.")
        return f"Switch to it with /model {output.name}"

    def queued_note(self) -> str:
        """What /quantize adds to its first answer (under the remote engine: where it runs)."""
        if self._settings.engine == "remote":
            return (" This runs on this machine's files in "
                    f"{self._settings.models_directory}, not on the model servers.")
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
