"""Sphinx configuration of the manual: ``tox -e docs`` (sphinx-build -W --keep-going)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

project = "backends"
author = "the backends authors"
copyright = "the backends authors"
release = version = "0.1.0"

extensions = ["sphinx.ext.autodoc"]
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
html_theme = "furo"
html_title = "backends"
exclude_patterns = ["_build", "_generated"]
default_role = "literal"


# -- the changelog: CHANGELOG.md (Markdown) made a page at build time ----------------------------
# A tiny converter for what CHANGELOG.md uses (headings, bullets, inline code, links), so the
# manual needs no Markdown parser; the page is written to _generated/ on every build.


def _inline(text: str) -> str:
    text = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"`\1 <\2>`__", text)
    # Markdown `code` is reST ``code``; a lone backslash or star stays literal outside it.
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 2 and " <" not in part:
            out.append("``" + part[1:-1].strip() + "``" if part[1:-1].strip() else part)
        else:
            out.append(re.sub(r"(?<![\w`])([*_|])(?=\S)", r"\\\1", part.replace("\\", "\\\\")))
    return "".join(out)


def changelog_rst(markdown: str) -> str:
    """CHANGELOG.md as reStructuredText: ``#`` headings, ``-`` bullets (continued by indent)."""
    marks = {2: "-", 3: "~", 4: "^", 1: "-"}
    lines: list[str] = []
    body = markdown.splitlines()
    if body and body[0].startswith("# "):
        body = body[1:]  # the page's own title (docs/changelog.rst)
    for raw in body:
        heading = re.match(r"^(#{1,4})\s+(.*)$", raw)
        if heading:
            text = _inline(heading.group(2).strip())
            lines += ["", text, marks[len(heading.group(1))] * max(len(text), 3), ""]
            continue
        bullet = re.match(r"^(\s*)[-*]\s+(.*)$", raw)
        if bullet:
            indent = len(bullet.group(1))
            if lines and lines[-1].strip() and not re.match(r"^\s*- ", lines[-1]) and indent == 0:
                lines.append("")
            lines.append(" " * indent + "- " + _inline(bullet.group(2)))
            continue
        lines.append(_inline(raw) if raw.strip() else "")
    return "\n".join(lines).strip() + "\n"


def _write_changelog(app: Any) -> None:
    target = HERE / "_generated" / "changelog.rst"
    target.parent.mkdir(exist_ok=True)
    text = changelog_rst((HERE.parent / "CHANGELOG.md").read_text(encoding="utf-8"))
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _write_changelog)
    return {"parallel_read_safe": True}
