"""The operation of /quantize and /quantize auto (registered in the command table, which also
says who may run it): the job queued, its progress edited into one message, and at the end of
an automatic run its chart with a way to switch to the model it chose."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bot.core.chats import ChatRef
from bot.i18n import _

if TYPE_CHECKING:
    from bot.chat.service import ChatService
    from bot.chat.sink import ReplySink
    from bot.models.auto_report import AutoQuantizeReport
    from bot.quantize.jobs import QuantizeJobs


class Call(Protocol):
    """What the operation reads of a command's invocation."""

    @property
    def ref(self) -> ChatRef: ...

    @property
    def argument(self) -> str: ...

    @property
    def user_id(self) -> int | None: ...


class Shows(Protocol):
    """What the operation needs of the front end: a progress message and a result."""

    def progress(self) -> ReplySink: ...

    async def present(self, text: str, *, photo: Path | None = None,
                      switch_to: str | None = None) -> None: ...


async def quantize(chat: ChatService, front: Shows, call: Call) -> str | None:
    jobs = chat.jobs
    if jobs is None:
        return _("Quantizing is not available here.")
    verb, _sep, rest = call.argument.strip().partition(" ")
    if verb.lower() == "cancel":
        return jobs.cancel()
    if verb.lower() == "auto":
        await _quantize_auto(jobs, front, call, rest)
        return None
    request = await asyncio.to_thread(jobs.plan, call.argument)
    progress = front.progress()

    async def finish(text: str) -> None:
        await progress.finish(text)

    job = await jobs.start(
        request, user_id=call.user_id, chat_id=call.ref.chat_id,
        report=progress.update, finish=finish,
    )
    await progress.update(
        _("Quantization #{job} queued: {file} → {qtype}…", job=job, file=request.source.name,
          qtype=request.qtype.label)
        + jobs.queued_note()
    )
    return None


async def _quantize_auto(jobs: QuantizeJobs, front: Shows, call: Call, argument: str) -> None:
    from bot.quantize.texts import caption_text, queued_text

    plan = await asyncio.to_thread(jobs.plan_auto, argument)
    progress = front.progress()

    async def finish(text: str, report: AutoQuantizeReport | None) -> None:
        await progress.finish(text)
        chosen = report.chosen if report is not None else None
        if report is not None and chosen is not None and chosen.path is not None:
            await front.present(caption_text(report), photo=report.chart_path,
                                switch_to=chosen.path.name)

    job = await jobs.start_auto(plan, user_id=call.user_id, chat_id=call.ref.chat_id,
                                report=progress.update, finish=finish)
    await progress.update(queued_text(job, plan) + jobs.queued_note())
