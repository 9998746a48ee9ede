"""The container image end to end: started against the loopback fake Bot API, it must answer a
private message with the demo model inside it. Run by config/container-test.sh:

    python -m tests.container_smoke --image localhost/alpaca-bot:test [--podman "podman ..."]

The token reaches the bot as a secret file (/run/secrets/alpaca-bot-token), the data goes to the
image's volume. Exit status 0 once the reply is complete; otherwise 1, with the container's log.
Needs only the standard library and tests/fakebotapi.py.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.fakebotapi import FakeBotAPI

QUESTION = "Hello! In one sentence: what is an alpaca?"
T = TypeVar("T")
SYSTEM_INFO = (
    "import llama_cpp; llama_cpp.llama_backend_init(); "
    "print(llama_cpp.llama_print_system_info().decode().strip())"
)


class SmokeFailure(Exception):
    """The container did not answer; the message says what was seen."""


class Container:
    """One detached container run by podman (or docker: the same command line)."""

    def __init__(self, podman: list[str], name: str) -> None:
        self.podman = podman
        self.name = name

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.podman, *args], check=check, capture_output=True, text=True, timeout=120
        )

    def start(self, image: str, options: list[str]) -> None:
        self.run("run", "--detach", "--name", self.name, *options, image)

    def running(self) -> bool:
        state = self.run("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def exec(self, *command: str) -> str:
        return self.run("exec", self.name, *command).stdout.strip()

    def logs(self) -> str:
        result = self.run("logs", self.name, check=False)
        return (result.stdout + result.stderr).strip()

    def remove(self) -> None:
        self.run("rm", "--force", "--volumes", self.name, check=False)


def wait(condition: Callable[[], T | None], container: Container, timeout: float, what: str) -> T:
    """Poll `condition()` until it is truthy; fail when the container stops or time runs out."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if not container.running():
            raise SmokeFailure(f"the container stopped while waiting for {what}")
        if time.monotonic() > deadline:
            raise SmokeFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)
    return value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def smoke(image: str, podman: list[str], run_options: list[str], timeout: float) -> str:
    """Start the image, send one private message, return the finished reply."""
    container = Container(podman, f"alpaca-bot-smoke-{os.getpid()}")
    with FakeBotAPI() as fake, tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp) / "alpaca-bot-token"
        secret.write_text(fake.token + "\n")
        secret.chmod(0o644)  # the image's user is not the caller
        started = time.monotonic()
        try:
            container.start(image, [
                "--network", "host",  # the fake listens on the host's loopback
                "--env", f"ALPACA_BOT_API_URL={fake.base_url}/bot",
                # /healthz on a free port: the host's network is shared, 9464 may be taken
                "--env", f"ALPACA_BOT_METRICS_LISTEN=127.0.0.1:{free_port()}",
                "--volume", f"{secret}:/run/secrets/alpaca-bot-token:ro",
                *run_options,
            ])
            wait(lambda: fake.requests("getUpdates"), container, timeout, "the bot to poll")
            print(f"polling after {time.monotonic() - started:.1f} s", flush=True)

            user = fake.user("Alice", "alice")
            chat = fake.private_chat(user)
            fake.send_text(chat, user, QUESTION)
            asked = time.monotonic()
            wait(lambda: [m for m in fake.bot_messages(chat) if m.text.strip()], container,
                 timeout, "the reply")
            reply = wait(SettledReply(fake, chat), container, timeout, "the reply to finish")
            print(f"answered {time.monotonic() - asked:.1f} s after the message", flush=True)

            print("data volume:", " ".join(container.exec("ls", "/data").split()))
            print("llama.cpp:", container.exec("python3", "-c", SYSTEM_INFO))
            health = container.run("healthcheck", "run", container.name, check=False)
            print("health check:", "healthy" if health.returncode == 0 else
                  f"FAILED ({health.returncode}) {health.stdout}{health.stderr}".strip())
            if health.returncode != 0:
                raise SmokeFailure("the image's health check fails on a working bot")
            return reply
        except (SmokeFailure, subprocess.SubprocessError) as exc:
            details = getattr(exc, "stderr", None) or ""
            print(f"FAILED: {exc} {details}".strip(), file=sys.stderr)
            print("---- container log ----", file=sys.stderr)
            print(container.logs(), file=sys.stderr)
            print("---- fake Bot API ----", file=sys.stderr)
            print(fake.describe(), file=sys.stderr)
            raise
        finally:
            container.remove()


class SettledReply:
    """The bot's messages in a chat once they have not changed for `quiet` seconds: the
    streaming edits are over."""

    def __init__(self, fake: FakeBotAPI, chat: dict[str, Any], quiet: float = 3.0) -> None:
        self.fake, self.chat, self.quiet = fake, chat, quiet
        self.seen: list[tuple[int, str, int]] = []
        self.since = time.monotonic()

    def __call__(self) -> str | None:
        messages = [(m.message_id, m.text, m.edit_count) for m in self.fake.bot_messages(self.chat)]
        if messages != self.seen:
            self.seen, self.since = messages, time.monotonic()
            return None
        if not messages or time.monotonic() - self.since < self.quiet:
            return None
        return "\n".join(text for _, text, _ in messages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--podman", default="podman", help="the container command, with options")
    parser.add_argument("--run-option", action="append", default=[], metavar="OPTION",
                        help="an extra option of `podman run` (repeatable)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for each step")
    args = parser.parse_args(argv)
    try:
        reply = smoke(args.image, shlex.split(args.podman), args.run_option, args.timeout)
    except (SmokeFailure, subprocess.SubprocessError):
        return 1
    print(f"the bot answered {QUESTION!r}:\n    {reply}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
