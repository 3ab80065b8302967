"""MkDocs hook: the documents that live at the repository's root (FORMAT.md, ARCHITECTURE.md, CHANGELOG.md) become
pages of the site without being copied, and their links to other root files point at the repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
ROOT_PAGES = ("FORMAT.md", "ARCHITECTURE.md", "CHANGELOG.md")
REPOSITORY = "https://github.com/hristo-vrigazov/mmap.ninja/blob/master/"
_LINK = re.compile(r"\]\((?!https?://|#)([^)#\s]+)(#[^)\s]*)?\)")


def _relinked(text: str) -> str:
    """Links from a root document to a file that is not a page of the site go to the repository instead."""
    def fix(match: re.Match[str]) -> str:
        target, anchor = match.group(1), match.group(2) or ""
        if target in ROOT_PAGES:
            return match.group(0)
        return f"]({REPOSITORY}{target}{anchor})"
    return _LINK.sub(fix, text)


def on_files(files: Files, config: Any) -> Files:
    for name in ROOT_PAGES:
        files.append(File.generated(config, name, content=_relinked((ROOT / name).read_text(encoding="utf-8"))))
    return files
