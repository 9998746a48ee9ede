"""The bot in a process of its own, for tests that kill it for real (SIGKILL): the settings
come as JSON on the command line, the engine is the scripted one writing `--reply` and then
hanging, as a reply cut off mid-way is. Run as `python -m tests.killedbot SETTINGS_JSON --reply
TEXT`; it serves until killed."""

from __future__ import annotations

import argparse
import asyncio
import json

from bot.ops.runtime import open_runtime
from bot.settings import load_settings
from bot.telegram.app import run_telegram
from tests.fakeengine import ScriptedEngine


async def serve(values: dict[str, object], reply: str) -> None:
    settings = load_settings(None, **values)
    engine = ScriptedEngine(delay=0.05)
    engine.hang = True
    engine.enqueue(reply)
    async with open_runtime(settings, engine=engine, load=lambda path: engine) as runtime:
        await run_telegram(settings, runtime.service, asyncio.Event(), poll_timeout=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("settings", type=json.loads)
    parser.add_argument("--reply", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.settings, args.reply))


if __name__ == "__main__":
    main()
