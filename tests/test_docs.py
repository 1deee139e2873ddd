"""The README a newcomer reads: short, its links and images resolve; no file points outside the repository.

``docs/`` itself is checked by ``mkdocs build --strict`` in ``make test`` (every page in nav, every link and
anchor); the README is not part of that site, so its links are checked here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
#: Where the team keeps notes outside the repository: no file of the repository may send a reader there.
OUTSIDE = ("../" + "shared", "/work/" + "shared")


def _anchors(page: Path) -> set[str]:
    """The heading anchors mkdocs gives a Markdown page (outside fenced code)."""
    anchors, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            anchors.add(slugify(line.lstrip("#").strip().replace("`", ""), "-"))
    return anchors


def test_the_readme_is_a_five_minute_read() -> None:
    assert len(README.read_text().splitlines()) <= 250


def test_every_relative_link_of_the_readme_resolves() -> None:
    targets = [t for t in LINK.findall(README.read_text()) if not re.match(r"[a-z]+:", t)]
    assert targets, "the README links into docs/"
    for target in targets:
        path, _, anchor = unquote(target).partition("#")
        file = (ROOT / path) if path else README
        assert file.is_file(), f"README links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(file), f"README links to {target}: no such heading in {path}"


def test_the_dashboard_screenshot_is_small() -> None:
    assert (ROOT / "docs" / "images" / "dashboard.png").stat().st_size <= 300_000


def test_no_file_points_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    offenders = []
    for name in filter(None, files.decode().split("\0")):
        path = ROOT / name
        if not path.is_file() or path.suffix in (".png", ".gz"):
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{name}: {needle}" for needle in OUTSIDE if needle in text]
    assert offenders == []
