"""`alpaca-bot doctor`'s checks that need no server (the rest: tests/integration/test_metrics.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.ops.doctor import check_drafting
from bot.settings import draft_ignored, load_settings


def test_drafting_is_checked_where_it_is_asked_for_and_ignored_outside_the_pool(tmp_path: Path) -> None:
    assert check_drafting(load_settings(None, data=tmp_path)) == []
    [finding] = check_drafting(load_settings(None, data=tmp_path, engine="simple", draft="ngram"))
    assert finding.warning and finding.line() == (
        "! draft: ngram is ignored: only the pool engine drafts, this is engine simple")


async def test_the_bot_says_at_start_that_an_engine_other_than_the_pool_ignores_draft(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bot.ops.runtime import open_runtime
    from tests.fakeengine import ScriptedEngine

    settings = load_settings(None, data=tmp_path, engine="simple", draft="ngram")
    async with open_runtime(settings, engine=ScriptedEngine()):
        pass
    assert ("draft ngram is ignored: only the pool engine drafts, this is engine simple"
            in caplog.text)
    remote = load_settings(None, data=tmp_path, engine="remote", draft="ngram",
                           backends=[{"url": "http://127.0.0.1:9", "kind": "llama.cpp"}])
    assert draft_ignored(remote) == ("ngram is ignored: only the pool engine drafts, this is "
                                      "engine remote; a llama-server drafts by its own "
                                      "--spec-type or --model-draft")
    assert draft_ignored(load_settings(None, data=tmp_path, draft="ngram")) is None


def test_drafting_on_the_f16_cache_is_a_warning_that_names_the_faster_cache(tmp_path: Path) -> None:
    [finding] = check_drafting(load_settings(None, data=tmp_path, draft="ngram"))
    assert finding.problem is None and finding.warning
    assert finding.line().startswith("! draft: ngram, up to 4 tokens a step, f16 cache")
    assert 'kv_type = "q8_0"' in finding.line()

    [finding] = check_drafting(load_settings(None, data=tmp_path, draft="ngram", draft_max=6,
                                             kv_type="q8_0"))
    assert finding.line() == "✓ draft: ngram, up to 6 tokens a step, q8_0 cache"


def test_a_draft_model_that_cannot_be_read_is_a_problem_with_its_fix(tmp_path: Path) -> None:
    missing = tmp_path / "small.gguf"
    [finding] = check_drafting(load_settings(None, data=tmp_path, draft=str(missing),
                                             kv_type="q8_0"))
    assert finding.problem is not None and str(missing) in finding.problem
    assert finding.fix is not None and "ALPACA_BOT_DRAFT" in finding.fix

    missing.write_bytes(b"not a gguf file at all")
    [finding] = check_drafting(load_settings(None, data=tmp_path, draft=str(missing),
                                             kv_type="q8_0"))
    assert finding.problem is not None and "cannot be used" in finding.problem
