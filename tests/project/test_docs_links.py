"""Every relative link and #anchor in README.md and docs/*.md points at a file that exists and, for an
anchor, at a heading of that file (GitHub's anchor rules: lower case, spaces to '-', punctuation other
than '-' and '_' dropped, '-1', '-2', ... for repeated headings)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
# [text](dest) and ![alt](dest); dest is <...> (spaces allowed) or a run without spaces; an optional "title"
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>\n]*>|[^\s()]+)(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", flags=re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def prose(text: str) -> str:
    """The text without fenced code blocks (links in code are not links)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = prose(path.read_text())
    seen: dict[str, int] = {}
    out = set(HTML_ANCHOR.findall(text))
    for _, title in HEADING.findall(text):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = CODE_SPAN.sub("", prose(path.read_text()))
    return [m.group(1)[1:-1] if m.group(1).startswith("<") else m.group(1) for m in LINK.finditer(text)]


def test_the_slug_rules():
    assert slug("The main job (`scripts/demo.sh`)") == "the-main-job-scriptsdemosh"
    assert slug("Reference Quality Transfer: the embedding spec") == "reference-quality-transfer-the-embedding-spec"
    assert slug("Load IQA-Adapter (`IQAAdapterLoader`)") == "load-iqa-adapter-iqaadapterloader"
    assert (
        slug("How it works, and the choices where the paper is silent")
        == "how-it-works-and-the-choices-where-the-paper-is-silent"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(page: Path):
    broken = []
    found = links(page)
    for dest in found:
        if re.match(r"^[a-z][a-z0-9+.-]*:", dest, flags=re.I):  # http:, https:, mailto: ...
            continue
        target, _, anchor = dest.partition("#")
        file = (page.parent / unquote(target)).resolve() if target else page
        if not file.exists():
            broken.append(f"{dest}: no file {file}")
            continue
        if anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{dest}: no heading '#{anchor}' in {file.relative_to(REPO)}")
    assert found or page.name != "README.md", "no links found: the link pattern is broken"
    assert broken == [], "\n".join(broken)
