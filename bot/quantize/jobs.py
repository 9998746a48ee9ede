"""`/quantize` jobs: one at a time, in the background, recorded in the database.

A job quantizes the configured f16 source (or a named file of the models directory) into the
models directory with llama.cpp's quantizer in a child process, reporting progress as it goes.
`/quantize auto` (`bot.quantize.auto_job`) runs in the same single place, and `/quantize
cancel` stops either kind. Both end through one ladder (`_conclude`): done, cancelled, failed
or crashed, recorded once. A restart in the middle leaves the job `running` in the database;
the next start marks it `interrupted` and tells the chat that asked.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import ModelError, QuantizeCancelled, QuantizeError, UserError
from bot.i18n import _
from bot.llama.gguf_file import read_gguf_info
from bot.metrics import Metrics
from bot.models.auto_plan import AutoPlan, remove_work_dirs
from bot.models.auto_report import AutoQuantizeReport
from bot.models.library import find_model
from bot.models.quant_types import QuantType, parse_quant_type
from bot.models.quantize import QuantizeResult, quantize_model_async
from bot.models.quantize_output import default_output_path
from bot.models.quantizer_process import QuantizeProgress
from bot.quantize.auto_job import AutoJobRun, plan_auto_job
from bot.quantize.texts import AutoEndings, QuantizeEndings, describe, progress_text, table_text
from bot.settings import Settings
from bot.store.jobs import add_quantize_job, finish_quantize_job, interrupt_running_jobs
from bot.store.schema import QuantizeJobRow

log = logging.getLogger(__name__)

DEFAULT_TYPE = "q4_0"
Report = Callable[[str], Awaitable[None]]
AutoFinish = Callable[[str, AutoQuantizeReport | None], Awaitable[None]]
"""Called once an auto job ended: the final text, and the report when it succeeded."""
R = TypeVar("R")
Values = dict[str, Any]
"""The columns a job's row gets when it ends (`finish_quantize_job`)."""


@dataclass(frozen=True)
class JobRequest:
    source: Path
    target: Path
    qtype: QuantType


class Endings(Protocol):
    """What a kind of job says when it did not succeed."""

    def cancelled(self) -> str: ...

    def failed(self, error: Exception) -> str: ...

    def crashed(self) -> str: ...


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

    def plan_auto(self, argument: str) -> AutoPlan:
        """Parse `/quantize auto [TYPES...] [FILE]` (blocking: reads the source's header)."""
        return plan_auto_job(self._settings, argument)

    async def start(
        self, request: JobRequest, *, user_id: int | None, chat_id: int | None,
        report: Report, finish: Report,
    ) -> int:
        """Record and start a job; progress goes to `report`, the outcome to `finish`."""
        job_id = await self._begin(
            f"{request.source.name} → {request.qtype.label}", requested_by=user_id,
            chat_id=chat_id, source=str(request.source), target=str(request.target),
            qtype=request.qtype.label,
        )
        self._task = asyncio.create_task(self._run(job_id, request, report, finish))
        return job_id

    async def start_auto(
        self, plan: AutoPlan, *, user_id: int | None, chat_id: int | None, report: Report,
        finish: AutoFinish,
    ) -> int:
        """Record and start an auto job; its work directory is the job's target until it ends
        (so a restart can remove it), then the chosen file."""
        job_id = await self._begin(
            describe(plan), requested_by=user_id, chat_id=chat_id, source=str(plan.source.path),
            target=str(plan.work_dir), qtype="auto",
        )
        assert self._cancel is not None

        def show(text: str) -> None:
            asyncio.ensure_future(report(text))

        self._auto = AutoJobRun(plan, show, self._cancel)
        self._task = asyncio.create_task(self._run_auto(job_id, self._auto, finish))
        return job_id

    async def _begin(self, what: str, **row: Any) -> int:
        """Record a job about to start (refused while one runs) and make it the running one."""
        self._check_free()
        async with self._sessions() as session:
            added = await add_quantize_job(session, **row)
            await session.commit()
            job_id = added.id
        self._running = (job_id, what)
        self._last = None
        self._cancel = threading.Event()
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

    async def _run(self, job_id: int, request: JobRequest, report: Report, finish: Report) -> None:
        self._settings.models_directory.mkdir(parents=True, exist_ok=True)

        def on_progress(progress: QuantizeProgress) -> None:
            self._last = progress
            asyncio.ensure_future(report(progress_text(request.source, request.qtype, progress)))

        endings = QuantizeEndings(request.source, request.qtype)

        async def done(result: QuantizeResult) -> tuple[Values, str]:
            before = await asyncio.to_thread(_type_name, request.source)
            text = endings.done(result, type_before=before,
                                remote=self._settings.engine == "remote")
            return {"state": "done", "size_before": result.size_before,
                    "size_after": result.size_after, "seconds": result.seconds}, text

        work = quantize_model_async(
            request.source, request.target, request.qtype,
            threads=self._settings.threads, on_progress=on_progress, cancel=self._cancel,
        )
        # Not unpacked where it is assigned: mypy would then solve R as `QuantizeResult | None`.
        ended = await self._conclude(job_id, work, endings, done)
        await finish(ended[0])

    async def _run_auto(self, job_id: int, run: AutoJobRun, finish: AutoFinish) -> None:
        async def done(result: AutoQuantizeReport) -> tuple[Values, str]:
            chosen = result.chosen
            values: Values = {
                "state": "done", "size_before": result.source_bytes, "seconds": result.seconds,
                "target": str(chosen.path if chosen and chosen.path else result.json_path),
            }
            if chosen is not None:
                values["size_after"] = chosen.size_bytes
            return values, table_text(result)

        endings = AutoEndings(run.plan.source.path)
        ended = await self._conclude(job_id, run.run(), endings, done)
        await finish(*ended)

    async def _conclude(
        self, job_id: int, work: Awaitable[R], endings: Endings,
        done: Callable[[R], Awaitable[tuple[Values, str]]],
    ) -> tuple[str, R | None]:
        """Await a job's work and record how it ended: the one place a job ends. A known error
        is shown to the chat, any other logged with its traceback; a bot stopping meanwhile
        records the job interrupted and lets the cancellation through."""
        result: R | None = None
        values: Values
        try:
            outcome = await work
        except QuantizeCancelled:
            values = {"state": "cancelled", "error": "cancelled with /quantize cancel"}
            text = endings.cancelled()
        except (QuantizeError, ModelError, UserError) as exc:
            values = {"state": "failed", "error": str(exc)}
            text = endings.failed(exc)
        except asyncio.CancelledError:
            await self._record(job_id, {"state": "interrupted", "error": "the bot was stopped"})
            self._end()
            raise
        except Exception as exc:  # recorded and reported, then logged with its traceback
            log.exception("quantization job %d failed", job_id)
            values = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
            text = endings.crashed()
        else:
            result = outcome
            values, text = await done(outcome)
        await self._record(job_id, values)
        self._end()
        return text, result

    def _end(self) -> None:
        self._running = None
        self._auto = None
        self._cancel = None

    def queued_note(self) -> str:
        """What /quantize adds to its first answer (under the remote engine: where it runs)."""
        if self._settings.engine == "remote":
            return " " + _("This runs on this machine's files in {directory}, not on the model "
                           "servers.", directory=self._settings.models_directory)
        return ""

    async def _record(self, job_id: int, values: Values) -> None:
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
            target = Path(row.target)
            await asyncio.to_thread(_remove_partial_files, target)
            if row.qtype == "auto":  # its target is the work directory
                await asyncio.to_thread(remove_work_dirs, target.parent, target)
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
