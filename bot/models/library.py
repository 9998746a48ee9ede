"""The models directory as the admin sees it: its GGUF files (each header read), listed, and
one chosen by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.errors import ModelError, UserError
from bot.i18n import _
from bot.llama.gguf_file import read_gguf_info
from bot.models.progress import format_bytes


@dataclass(frozen=True)
class ModelFileEntry:
    """One line of a models directory listing; `error` says why a file could not be read."""

    path: Path
    size_bytes: int
    file_type_name: str
    error: str | None = None


def list_gguf_files(directory: Path) -> list[ModelFileEntry]:
    """The `*.gguf` files of a directory (not recursive), by name, each with size and type."""
    if not directory.is_dir():
        raise ModelError(f"not a directory: {directory}")
    entries = []
    for path in sorted(directory.iterdir(), key=lambda p: p.name.lower()):
        if path.suffix.lower() != ".gguf" or not path.is_file():
            continue  # also skips dangling symlinks
        try:
            info = read_gguf_info(path)
        except ModelError as exc:
            size = path.stat().st_size
            entries.append(ModelFileEntry(path, size, "invalid", error=str(exc)))
            continue
        entries.append(ModelFileEntry(path, info.size_bytes, info.file_type_name))
    return entries


def describe_models(directory: Path, current: Path) -> str:
    """The /model listing: every GGUF file with size and type, the loaded one marked."""
    try:
        entries = list_gguf_files(directory) if directory.is_dir() else []
    except OSError as exc:
        return _("Cannot read the models directory {directory}: {error}", directory=directory,
                 error=exc.strerror or exc)
    if not entries:
        return _("No GGUF files in {directory}. Put models there (or use /quantize).",
                 directory=directory)
    lines = [_("Models in {directory}:", directory=directory)]
    for entry in entries:
        mark = "▶" if _same(entry.path, current) else "•"
        detail = entry.error if entry.error else (
            f"{format_bytes(entry.size_bytes)}, {entry.file_type_name}"
        )
        lines.append(f"{mark} {entry.path.name} — {detail}")
    lines.append(_("Switch with /model NAME."))
    return "\n".join(lines)


def find_model(directory: Path, name: str) -> ModelFileEntry:
    """The GGUF file of the models directory that `name` means: its file name, its stem, or a
    unique prefix. Never a path outside the directory."""
    wanted = name.strip()
    if not wanted or "/" in wanted or "\\" in wanted or wanted in (".", ".."):
        raise UserError(_("Give the file name of a model in the models directory (see /model)."))
    entries = list_gguf_files(directory) if directory.is_dir() else []
    lowered = wanted.lower()
    for entry in entries:
        if entry.path.name.lower() == lowered or entry.path.stem.lower() == lowered:
            return _usable(entry)
    matches = [e for e in entries if e.path.name.lower().startswith(lowered)]
    if len(matches) == 1:
        return _usable(matches[0])
    if len(matches) > 1:
        names = ", ".join(e.path.name for e in matches)
        raise UserError(_("{name} matches several models: {names}", name=repr(wanted),
                          names=names))
    raise UserError(_("No model {name} in the models directory; /model lists them.",
                      name=repr(wanted)))


def _usable(entry: ModelFileEntry) -> ModelFileEntry:
    if entry.error:
        raise UserError(_("{file} cannot be used: {error}", file=entry.path.name,
                          error=entry.error))
    return entry


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b
