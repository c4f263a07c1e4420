"""Rewrite the module tables of docs/architecture.md from the tree: one line per module.

Each table sits between ``<!-- modules: FOLDER -->`` and ``<!-- /modules -->``
and lists every file of FOLDER (its subfolders too) with the first paragraph
of its docstring, so the page says what the code says about itself::

    python scripts/module_tables.py           # rewrite the tables
    python scripts/module_tables.py --check   # exit 1 if a table is out of date

A module without a docstring shows ``(no docstring)``: write one.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

__all__ = ["main", "render", "table"]

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
BLOCK = re.compile(r"(<!-- modules: (?P<folder>\S+) -->\n)(?P<body>.*?)(<!-- /modules -->)", re.S)
DATA_FILES = {
    "chat_page.html": "the chat page `GET /` serves (plain HTML and `EventSource`)",
    "inspector_page.html": "the inspector's page `GET /inspect` serves",
    "script.py.mako": "Alembic's template for a new migration",
}
SKIPPED = {"py.typed"}


def _markdown(text: str) -> str:
    """reStructuredText roles and double backquotes as Markdown code; pipes escaped."""
    text = re.sub(r":(?:class|func|mod|meth|attr|data|exc):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`").replace("|", "\\|")


def _summary(path: Path) -> str:
    if path.suffix != ".py":
        return DATA_FILES.get(path.name, "(data)")
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc:
        return "(no docstring)"
    return " ".join(doc.split("\n\n")[0].split())


def table(folder: str, root: Path = ROOT) -> str:
    """The Markdown table of every file under ``folder``: its path and its summary."""
    base = root / folder
    rows = ["| module | what |", "|---|---|"]
    for path in sorted(base.rglob("*")):
        relative = path.relative_to(base)
        if not path.is_file() or "__pycache__" in relative.parts or path.name in SKIPPED:
            continue
        if path.suffix == ".pyc":
            continue
        rows.append(f"| `{relative.as_posix()}` | {_markdown(_summary(path))} |")
    return "\n".join(rows) + "\n"


def render(text: str, root: Path = ROOT) -> str:
    """``text`` with every module table rewritten from the tree under ``root``."""

    def rewrite(match: re.Match[str]) -> str:
        return match.group(1) + "\n" + table(match.group("folder"), root) + "\n" + match.group(4)

    return BLOCK.sub(rewrite, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a table is out of date")
    args = parser.parse_args(argv)
    old = DOC.read_text(encoding="utf-8")
    new = render(old)
    if args.check:
        if new != old:
            print(f"{DOC.relative_to(ROOT)} is out of date: run python {__file__}", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
