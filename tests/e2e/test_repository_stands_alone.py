"""A clone of this repository is all a user or CI needs: nothing tracked points outside it,
and every relative link of the README and of docs/ leads to a file (and heading) inside it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.integration import missing

ROOT = Path(__file__).resolve().parents[2]
# Written in two parts so that this file does not match its own search.
SIBLING_FOLDER = ".." + "/shared"
# Absolute paths of one particular machine that leak into files by accident.
MACHINE_PATHS = re.compile(r"(?<![\w.])/(?:work|home|Users)/[\w.-]+")

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _git(*args: str) -> str:
    if shutil.which("git") is None:
        missing("'git' is not installed")
    proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        missing(f"{ROOT} is not a git checkout: {proc.stderr.strip()}")
    return proc.stdout


def _tracked_text_files() -> list[Path]:
    files = []
    for name in _git("ls-files", "-z").split("\0"):
        path = ROOT / name
        if name and path.is_file() and not path.is_symlink():
            try:
                path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # binary: no links to follow
            files.append(path)
    return files


def _prose(markdown: str) -> str:
    """The markdown without code blocks and code spans, whose brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces to '-'."""
    text = CODE_SPAN.sub(lambda m: m.group(0)[1:-1], heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def _anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        anchors.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return anchors


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _broken_links(document: Path) -> list[str]:
    problems = []
    for target in LINK.findall(_prose(document.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (document.parent / path_part).resolve() if path_part else document
        where = f"{document.relative_to(ROOT)}: ({target})"
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{where} leads outside the repository")
        elif not resolved.exists():
            problems.append(f"{where} leads to nothing")
        elif (
            anchor
            and resolved.suffix == ".md"
            and anchor not in _anchors(resolved.read_text(encoding="utf-8"))
        ):
            problems.append(f"{where}: no heading '{anchor}' in {resolved.relative_to(ROOT)}")
    return problems


def test_no_tracked_file_refers_to_the_sibling_shared_folder():
    offenders = [
        str(path.relative_to(ROOT))
        for path in _tracked_text_files()
        if SIBLING_FOLDER in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_no_tracked_file_names_a_path_of_one_particular_machine():
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in _tracked_text_files()
        for match in MACHINE_PATHS.finditer(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_readme_and_docs_exist_and_the_readme_links_into_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert (ROOT / "docs" / "README.md").is_file()
    assert "](docs/" in _prose(readme)


def test_the_docs_index_lists_every_page_of_docs():
    index = ROOT / "docs" / "README.md"
    linked = {
        (index.parent / target.partition("#")[0]).resolve()
        for target in LINK.findall(_prose(index.read_text(encoding="utf-8")))
    }
    unlisted = [
        page.name
        for page in sorted((ROOT / "docs").glob("*.md"))
        if page != index and page.resolve() not in linked
    ]
    assert unlisted == [], "add these pages to docs/README.md"


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(document):
    assert _broken_links(document) == []


def test_the_link_checker_catches_what_it_is_for(tmp_path, monkeypatch):
    """The checks above cannot pass vacuously: a page with a link outside the repository, a
    missing file and a missing heading is reported three times; code is not parsed."""
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A title\n\n## `reconcile --once`\n")
    page = tmp_path / "docs" / "README.md"
    page.write_text(
        f"[out](../{SIBLING_FOLDER}/X.md) [gone](gone.md) [bad](a.md#nope)\n"
        "[ok](a.md#reconcile---once) [ok](a.md#a-title) [web](https://example.com)\n"
        "`[code](nowhere.md)`\n\n```\n[fenced](nowhere.md)\n```\n"
    )
    problems = _broken_links(page)
    assert len(problems) == 3, problems
    assert "outside the repository" in problems[0]
    assert "leads to nothing" in problems[1]
    assert "no heading 'nope'" in problems[2]
