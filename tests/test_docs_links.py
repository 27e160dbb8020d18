"""The README and the docs pages link only to files that exist and to headings they hold; each
docs page opens with its table of contents; the README stays short."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
README_LINES = 300


def _anchors(page: Path) -> set[str]:
    """GitHub's ids of a page's headings (lower case, punctuation dropped, blanks as dashes)."""
    anchors, fenced = set(), False
    for line in page.read_text().splitlines():
        fenced ^= line.startswith("```")
        heading = re.match(r"#{1,6} (.*)", line)
        if heading and not fenced:
            anchors.add(re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_names_a_file_and_a_heading_there(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert broken == []


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda page: page.name)
def test_each_docs_page_opens_with_a_table_of_contents(page: Path) -> None:
    before_first_section = page.read_text().split("\n## ", 1)[0]
    entries = re.findall(r"^ *- \[[^]]+\]\(#([^)]+)\)", before_first_section, re.M)
    assert entries, f"{page.name} has no table of contents before its first section"
    assert set(entries) <= _anchors(page)


def test_the_readme_stays_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= README_LINES
