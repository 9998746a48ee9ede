"""The READMEs are landing pages: the two set-up commands first, a feature list whose every line
links into docs/, links that lead somewhere, the two languages in step, short.

What the bot does is documented in docs/ (tests/unit/test_docs.py keeps it true and in step).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from pymdownx.slugs import slugify

ROOT = Path(__file__).resolve().parents[2]
EN = "README.md"
ZH = "README.zh-CN.md"
README_FILES = (EN, ZH)
MOST_LINES = 160
"""A landing page fits on a screen or two; the rest belongs in docs/."""

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (.+)$")
# The site's anchors (mkdocs.yml: pymdownx.slugs.slugify, lower case) are GitHub's too.
_slug = slugify(case="lower")


@cache
def text(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def outside_code(name: str) -> list[str]:
    lines, fenced = [], False
    for line in text(name).splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown page's headings, as the site and GitHub make them."""
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1)).replace("`", "")
            found.add(_slug(plain, "-"))
    return found


def first_code_block_commands(name: str) -> list[str]:
    lines = text(name).splitlines()
    start = next((i for i, line in enumerate(lines) if _FENCE.match(line)), None)
    assert start is not None, f"{name} has no code block"
    end = next(i for i in range(start + 1, len(lines)) if _FENCE.match(lines[i]))
    return [command for line in lines[start + 1:end] if (command := line.split("#")[0].strip())]


def test_the_first_code_block_has_the_two_set_up_commands() -> None:
    en, zh = first_code_block_commands(EN), first_code_block_commands(ZH)
    assert en == ["make run", "make test"], f"{EN}'s first code block runs {en}, not make run, make test"
    assert zh == en, f"{ZH}'s first code block runs {zh}, {EN}'s {en}"


def test_ci_runs_the_readmes_test_command() -> None:
    test_command = first_code_block_commands(EN)[1]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci, f".ci/run does not run the README's test command {test_command!r}"


def test_the_readmes_link_to_each_other() -> None:
    assert "(README.zh-CN.md)" in text(EN), f"{EN} does not link to {ZH}"
    top = "\n".join(text(ZH).splitlines()[:5])
    assert "English: [README.md](README.md)" in top, f"{ZH} does not link back to {EN} at its top"


@pytest.mark.parametrize("name", README_FILES)
def test_the_readme_is_a_landing_page(name: str) -> None:
    count = len(text(name).splitlines())
    assert count <= MOST_LINES, f"{name} is {count} lines: move what it explains into docs/"


@pytest.mark.parametrize("name", README_FILES)
def test_every_link_leads_to_a_page_and_its_heading(name: str) -> None:
    broken = []
    for line in outside_code(name):
        for target in _LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue  # https://, mailto:
            path, _, anchor = target.partition("#")
            page = ROOT / path if path else ROOT / name
            if not page.is_file():
                broken.append(f"{target}: no such file")
            elif anchor and anchor not in anchors(page):
                broken.append(f"{target}: {path or name} has no heading #{anchor}")
    assert not broken, f"{name} has broken links: {broken}"


def feature_links(name: str) -> list[str]:
    """The page each line of the feature list links to (the list after the first heading
    that starts a list of bullets each holding a link into docs/)."""
    lines = outside_code(name)
    start = next(i for i, line in enumerate(lines)
                 if line in ("## Features", "## 功能"))
    features = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("- "):
            links = [target for target in _LINK.findall(line) if target.startswith("docs/")]
            assert links, f"{name}: a feature without a link into docs/: {line}"
            features.append(links[-1].partition("#")[0])
    return features


def test_both_readmes_list_the_same_features() -> None:
    en = feature_links(EN)
    zh = [link.replace("docs/zh/", "docs/", 1) for link in feature_links(ZH)]
    assert len(en) >= 10, f"{EN} lists {len(en)} features"
    assert en == zh, f"the feature lists differ:\n  {EN}: {en}\n  {ZH}: {zh}"
    assert all(link.startswith("docs/zh/") for link in feature_links(ZH)), (
        f"{ZH}'s features should link to the Chinese pages"
    )
