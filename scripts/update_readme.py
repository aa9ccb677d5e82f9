#!/usr/bin/env python3
"""Regenerate the tables generated from code: the settings table in README.md (from the Config
dataclass, the single source of truth) and the gunicorn tables in docs/from-gunicorn.md (from
that and config/gunicorn.py, the one list of gunicorn names). ``--check`` exits 1 if a page is
stale, without writing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from prefork.config.cli import settings_reference_markdown
from prefork.config.gunicorn import gunicorn_markdown, prefork_only_markdown

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FROM_GUNICORN = ROOT / "docs" / "from-gunicorn.md"

#: page -> (marker name, generator): the text between `<!-- NAME:start ... -->` and
#: `<!-- NAME:end -->` is the generator's output.
GENERATED: dict[Path, list[tuple[str, Callable[[], str]]]] = {
    README: [("settings-table", settings_reference_markdown)],
    FROM_GUNICORN: [("gunicorn-tables", gunicorn_markdown),
                    ("prefork-only-table", prefork_only_markdown)],
}


def render(text: str, marker: str, generate: Callable[[], str]) -> str:
    start = text.index(f"<!-- {marker}:start")
    start = text.index("\n", start) + 1
    end = text.index(f"<!-- {marker}:end -->")
    return text[:start] + generate().rstrip("\n") + "\n" + text[end:]


def main() -> int:
    stale = []
    for page, blocks in GENERATED.items():
        text = page.read_text()
        updated = text
        for marker, generate in blocks:
            updated = render(updated, marker, generate)
        if updated == text:
            continue
        if "--check" in sys.argv[1:]:
            stale.append(page.relative_to(ROOT))
        else:
            page.write_text(updated)
    for page in stale:
        print(f"{page}: generated tables are stale: run python scripts/update_readme.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
