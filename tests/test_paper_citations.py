"""Every "docs/paper.md, section N" cited in the code names a section that docs/paper.md has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "docs" / "paper.md"
CITATION = re.compile(r"docs/paper\.md,\s+sections?\s+([0-9][0-9.,\s\-and]*[0-9])")


def _sections() -> set[str]:
    return {m.group(1) for m in re.finditer(r"^#{2,4} ([0-9]+(?:\.[0-9]+)*)\.? ",
                                            PAPER.read_text(), re.MULTILINE)}


def _cited(text: str) -> list[str]:
    numbers = []
    for match in CITATION.finditer(text):
        numbers += re.findall(r"[0-9]+(?:\.[0-9]+)*", match.group(1))
    return numbers


def test_every_cited_section_exists() -> None:
    sections = _sections()
    assert {"1", "2.4", "3.1", "4.3", "6", "8"} <= sections  # the outline is numbered
    missing = []
    for folder in ("dltk_mm", "experiments", "tests", "docs"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".md", ".cfg") or path == PAPER:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            missing += [f"{path.relative_to(ROOT)}: section {n}" for n in _cited(text)
                        if n not in sections]
    assert missing == []


def test_code_cites_docs_not_a_specification_document() -> None:
    """Citations go to docs/ (in the repository): nowhere in the tree is "spec" or
    "specification" followed by a section number, nor a document named "<name>-spec"."""
    pattern = re.compile(r"\bspec(ification)?\s+(sections?\s+)?[0-9]|\b[a-z]+-spec\b")
    hits = []
    for folder in ("dltk_mm", "experiments", "tests", "docs"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".md", ".cfg") and path.resolve() != Path(__file__):
                text = path.read_text(encoding="utf-8", errors="replace")
                hits += [f"{path.relative_to(ROOT)}" for _ in pattern.finditer(text)]
    assert hits == []
