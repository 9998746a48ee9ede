"""What the bot counts, in Prometheus' terms: one home for every metric's name, help and labels.

`Metrics` holds its own registry (a process runs one bot; tests run many), the chat layer and
the Telegram adapter record into it, and the engine's state (queue, slots, saved states) is read
when /metrics is scraped. Names follow Prometheus' conventions: `alpaca_bot_` first, counters end
in `_total`, durations in `_seconds`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bot.access.policy import REASONS, Reason
from bot.engine.base import Engine, Finished, StopReason
from bot.engine.drafting import Drafts

Outcome = Literal["complete", "length", "stopped", "failed"]

OUTCOMES: dict[StopReason, Outcome] = {
    "eos": "complete", "stop": "complete", "length": "length", "context": "length",
    "cancelled": "stopped",
}
"""A reply's outcome by the reason it ended."""

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
RATE_BUCKETS = (0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
Heard = Literal["heard", "nothing_heard", "too_long", "too_big", "undecodable", "model_error",
                "failed", "cancelled"]
HEARD: tuple[Heard, ...] = ("heard", "nothing_heard", "too_long", "too_big", "undecodable",
                            "model_error", "failed", "cancelled")
"""How a transcription (a voice note, an audio file, a round video) ended."""


class Metrics:
    """The bot's instruments on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.replies = Counter("alpaca_bot_replies", "Replies by how they ended.",
                               ["outcome"], registry=r)
        for outcome in ("complete", "length", "stopped", "failed"):
            self.replies.labels(outcome)
        self.generated_tokens = Counter("alpaca_bot_generated_tokens",
                                        "Tokens the model generated in replies.", registry=r)
        self.thinking_tokens = Counter(
            "alpaca_bot_thinking_tokens",
            "Of the tokens generated in replies, a thinking model's thinking (before its answer).",
            registry=r)
        self.prompt_tokens_evaluated = Counter(
            "alpaca_bot_prompt_tokens_evaluated", "Prompt tokens the model evaluated.", registry=r)
        self.prompt_tokens_cached = Counter(
            "alpaca_bot_prompt_tokens_cached",
            "Prompt tokens reused from a chat's KV cache instead of being evaluated.", registry=r)
        self.time_to_first_token = Histogram(
            "alpaca_bot_time_to_first_token_seconds",
            "From the request reaching the engine (queue included) to the reply's first text.",
            buckets=TTFT_BUCKETS, registry=r)
        self.generation_rate = Histogram(
            "alpaca_bot_generation_tokens_per_second",
            "Tokens per second of each reply, from its first text to its end.",
            buckets=RATE_BUCKETS, registry=r)
        self.bot_api_calls = Counter("alpaca_bot_bot_api_calls",
                                     "Telegram Bot API calls by method and result.",
                                     ["method", "result"], registry=r)
        self.flood_bans = Counter("alpaca_bot_bot_api_flood_bans",
                                  "Bot API answers 429 (flood control: retry after N seconds).",
                                  ["method"], registry=r)
        self.quantize_jobs = Counter("alpaca_bot_quantize_jobs",
                                     "Quantization jobs by how they ended.", ["outcome"],
                                     registry=r)
        self.messages_refused = Counter(
            "alpaca_bot_messages_refused",
            "Messages refused, by reason: access (not allowed), rate (questions a minute), "
            "tokens (the day's budget), backlog (questions waiting in the chat), busy (the "
            "model's queue full).", ["reason"], registry=r)
        for reason in REASONS:
            self.messages_refused.labels(reason)
        self.transcriptions = Counter(
            "alpaca_bot_transcriptions",
            "Voice notes, audio files and round videos transcribed, by outcome: heard, "
            "nothing_heard (silence), too_long, too_big (past Telegram's 20 MB), undecodable, "
            "model_error, failed, cancelled.", ["outcome"], registry=r)
        for heard in HEARD:
            self.transcriptions.labels(heard)
        self.transcribed_audio_seconds = Counter(
            "alpaca_bot_transcribed_audio_seconds", "Seconds of audio transcribed.", registry=r)
        self.transcription_real_time_factor = Histogram(
            "alpaca_bot_transcription_real_time_factor",
            "Seconds spent transcribing per second of audio (decoding and recognition, not the "
            "wait for a turn; below 1 is faster than real time).",
            buckets=RTF_BUCKETS, registry=r)
        self.last_bot_api_answer = 0.0
        """time.monotonic() of the Bot API's last answer (any HTTP status): /readyz reads it."""

    # -- recording --------------------------------------------------------------------------

    def reply_finished(self, finished: Finished, first_text: float | None) -> None:
        """A reply ended; `first_text`: seconds from its start to its first text, if any."""
        self.replies.labels(OUTCOMES[finished.reason]).inc()
        self.generated_tokens.inc(finished.n_generated)
        self.thinking_tokens.inc(finished.n_thinking)
        self.prompt_tokens_evaluated.inc(finished.n_evaluated)
        self.prompt_tokens_cached.inc(max(0, finished.n_prompt_tokens - finished.n_evaluated))
        if first_text is not None:
            self.time_to_first_token.observe(first_text)
            writing = finished.seconds - first_text
            if finished.n_generated > 1 and writing > 0:
                self.generation_rate.observe((finished.n_generated - 1) / writing)

    def reply_failed(self) -> None:
        self.replies.labels("failed").inc()

    def transcription(self, outcome: Heard, *, seconds: float = 0.0,
                      real_time_factor: float | None = None) -> None:
        """A transcription ended; a heard one says how long its audio was and how fast."""
        self.transcriptions.labels(outcome).inc()
        if seconds > 0:
            self.transcribed_audio_seconds.inc(seconds)
        if real_time_factor is not None:
            self.transcription_real_time_factor.observe(real_time_factor)

    def message_refused(self, reason: Reason) -> None:
        self.messages_refused.labels(reason).inc()

    def bot_api_call(self, method: str, status: int | None) -> None:
        """One Bot API call: its HTTP status, or None when no answer came (network error)."""
        if status is None:
            result = "network_error"
        else:
            self.last_bot_api_answer = time.monotonic()
            result = "ok" if 200 <= status < 300 else str(status)
            if status == 429:
                self.flood_bans.labels(method).inc()
        self.bot_api_calls.labels(method, result).inc()

    def watch_engine(self, current: Callable[[], Engine], *, kind: str) -> None:
        """Read the engine's model, queue, slots and saved states at every scrape (`current()`
        is the running engine, which /model may replace; `kind` the configured engine)."""
        self.registry.register(_EngineState(current, kind))


class _EngineState(Collector):
    """Gauges read off the running engine when /metrics is scraped."""

    def __init__(self, current: Callable[[], Engine], kind: str) -> None:
        self._current = current
        self._kind = kind

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        engine = self._current()
        info = engine.info
        yield InfoMetricFamily("alpaca_bot_model", "The model the bot runs.", value={
            "name": info.name, "file": info.path.name, "type": info.file_type or "",
            "engine": self._kind, "n_ctx": str(info.n_ctx),
        })
        report = engine.memory_report()
        busy = sum(1 for slot in report.slots if slot.state not in ("idle", "free", "empty"))
        pending = int(getattr(engine, "queued", 0))
        yield GaugeMetricFamily("alpaca_bot_queue_length",
                                "Requests waiting for the model (not yet writing).",
                                value=max(0, pending - busy))
        yield GaugeMetricFamily("alpaca_bot_slots_busy", "Engine slots writing a reply now.",
                                value=busy)
        yield GaugeMetricFamily("alpaca_bot_slots", "Engine slots (chats held at once).",
                                value=len(report.slots))
        yield GaugeMetricFamily("alpaca_bot_saved_state_bytes",
                                "Bytes of chats' KV states saved to disk.",
                                value=report.saved_bytes)
        yield GaugeMetricFamily("alpaca_bot_kv_cache_bytes",
                                "Bytes of KV cache the engine's slots use.",
                                value=report.kv_bytes_used)
        stats = engine.draft_stats() if isinstance(engine, Drafts) else None
        if stats is not None:  # the pool with speculative decoding on
            yield CounterMetricFamily(
                "alpaca_bot_drafted_tokens_total",
                "Tokens drafted (speculative decoding) and checked by the model.",
                value=stats.drafted)
            yield CounterMetricFamily(
                "alpaca_bot_draft_accepted_tokens_total",
                "Of the drafted tokens, those the model wrote too (they cost no step of "
                "their own).", value=stats.accepted)
