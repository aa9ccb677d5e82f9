#!/usr/bin/env python3
"""Regenerate the settings table in README.md from the Config dataclass (the single source
of truth). ``--check`` exits 1 if the README is stale, without writing."""

from __future__ import annotations

import sys
from pathlib import Path

from prefork.config.cli import settings_reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- settings-table:start"
END = "<!-- settings-table:end -->"


def render(text: str) -> str:
    start = text.index(START)
    start = text.index("\n", start) + 1
    end = text.index(END)
    return text[:start] + settings_reference_markdown().rstrip("\n") + "\n" + text[end:]


def main() -> int:
    text = README.read_text()
    updated = render(text)
    if "--check" in sys.argv[1:]:
        if updated != text:
            print("README.md settings table is stale: run python scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
