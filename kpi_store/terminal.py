"""Plain-text output for the CLI: tables, label/value lines, values, times, durations.

The wording of numbers, times and durations is shared with the dashboard
(``kpi_store.formats``); here they get the terminal's conventions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from .formats import format_duration, format_time, format_value

MISSING = "-"
CELL_WIDTH = 40


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with a header rule; long cells are cut to CELL_WIDTH."""
    cells = [[_cut(_text(value)) for value in row] for row in rows]
    widths = [
        max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)
    ]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
        "  ".join("-" * w for w in widths),
        *("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells),
    ]
    return "\n".join(line.rstrip() for line in lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """Aligned ``label  value`` lines."""
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label.ljust(width)}  {_text(value)}" for label, value in pairs)


def number(value: float | None, unit: str = "") -> str:
    """A KPI value for a terminal: the unit after the number (``5,506,100.50 $``)."""
    return format_value(value, unit, MISSING, unit_last=True)


def when(value: dt.datetime | None) -> str:
    """A stored time to the second; the column headers say it is UTC."""
    return format_time(value, MISSING, seconds=True, zone=False)


def duration(ms: float | None) -> str:
    return format_duration(ms, MISSING)


def _text(value: Any) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, dt.datetime):
        return when(value)
    return str(value).replace("\n", " ")


def _cut(text: str) -> str:
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"
