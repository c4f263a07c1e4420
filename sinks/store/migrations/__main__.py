"""``python -m sinks.store.migrations upgrade head|current|history``: Alembic's commands."""

from __future__ import annotations

import os
import sys

from alembic import command

from sinks.store.migrations import alembic_config

__all__: list[str] = []


def main(argv: list[str]) -> int:
    config = alembic_config(os.environ.get("RXLLM_DB_URL"))
    if argv[:1] == ["upgrade"]:
        command.upgrade(config, argv[1] if len(argv) > 1 else "head")
    elif argv[:1] == ["downgrade"] and len(argv) > 1:
        command.downgrade(config, argv[1])
    elif argv[:1] == ["current"]:
        command.current(config)
    elif argv[:1] == ["history"]:
        command.history(config)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
