"""The bot fixtures themselves (tests/botrunner.py): a bot test fails when the bot crashes, when
it does not stop, and when its log has an ERROR the test did not declare. Each case runs as a
test of its own in a nested pytest (pytester)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INNER_TESTS = '''
import asyncio
import logging

import pytest

import tests.botrunner
from tests.fakeengine import ScriptedEngine


serve = tests.botrunner.run_telegram


async def crash_after_serving(*args, **kwargs) -> None:
    await serve(*args, **kwargs)
    raise RuntimeError("the bot crashed while stopping")


async def hang_after_serving(*args, **kwargs) -> None:
    await serve(*args, **kwargs)
    await asyncio.Event().wait()


async def test_an_undeclared_error(run_bot) -> None:
    await run_bot(ScriptedEngine())
    logging.getLogger("bot.somewhere").error("something broke")


@pytest.mark.log_errors("something broke")
async def test_a_declared_error(run_bot) -> None:
    await run_bot(ScriptedEngine())
    logging.getLogger("bot.somewhere").error("something broke")


async def test_a_crash_on_stopping(run_bot, monkeypatch) -> None:
    monkeypatch.setattr(tests.botrunner, "run_telegram", crash_after_serving)
    await run_bot(ScriptedEngine())


async def test_a_hung_stop(run_bot, monkeypatch) -> None:
    monkeypatch.setattr(tests.botrunner, "run_telegram", hang_after_serving)
    monkeypatch.setattr(tests.botrunner, "STOP_TIMEOUT", 1.0)
    await run_bot(ScriptedEngine())
'''


@pytest.fixture
def database_kind() -> str:
    """The fixtures do not depend on the database: SQLite only."""
    return "sqlite"


def test_a_crash_a_hung_stop_and_an_undeclared_error_each_fail_a_bot_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest('pytest_plugins = ["tests.conftest"]\n')
    pytester.makeini("[pytest]\nasyncio_mode = auto\n"
                     "asyncio_default_fixture_loop_scope = function\n"
                     "markers = log_errors: errors a bot test expects\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    result.assert_outcomes(passed=4, errors=3)
    output = result.stdout.str()
    assert "ERROR at teardown of test_an_undeclared_error" in output
    assert "ERROR bot.somewhere: something broke" in output
    assert "ERROR at teardown of test_a_crash_on_stopping" in output
    assert "RuntimeError: the bot crashed while stopping" in output
    assert "ERROR at teardown of test_a_hung_stop" in output
    assert "the bot did not stop within 1 s" in output
