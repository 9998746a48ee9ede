"""The models directory as the admin sees it: listing GGUF files and choosing one by name."""

from __future__ import annotations

from pathlib import Path

from bot.errors import UserError
from bot.i18n import _
from bot.models.gguf_file import ModelFileEntry, list_gguf_files
from bot.models.progress import format_bytes


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
