"""How the commands print: tables, JSON, name/value pairs, notes on stderr, times and money.

Standard library only: the argument modules take `PROG` from here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

PROG = "gpushop"
"""The program's name, in usage lines and in front of every note on stderr."""


def print_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    """`rows` under `header`, each column as wide as its widest cell."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def print_json(data: Any) -> None:
    """`data` as indented JSON; what JSON cannot hold is written as its str()."""
    print(json.dumps(data, indent=2, default=str))


def print_pairs(pairs: Sequence[tuple[str, str]]) -> None:
    """One `name  value` line per pair, the values lined up."""
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        print(f"{name.ljust(width)}  {value}")


def note(message: str) -> None:
    """A line on stderr, so that stdout keeps only the command's answer."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def when(value: datetime | None) -> str:
    """A stored (UTC) time as this machine's local time, with its zone."""
    return f"{value.astimezone():%Y-%m-%d %H:%M %Z}" if value is not None else "-"


def money(value: float | None) -> str:
    """A dollar amount in a table cell; '-' where there is none."""
    return f"{value:.3f}" if value is not None else "-"


def ratio(value: float | None) -> str:
    """A ratio in a table cell, such as '1.25x'; '-' where there is none."""
    return f"{value:.2f}x" if value is not None else "-"


def rounded(value: float | None) -> float | None:
    """A float for JSON output, to 6 decimals."""
    return round(value, 6) if value is not None else None
