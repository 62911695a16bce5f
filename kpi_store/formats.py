"""How numbers, values, times, durations and parameters are written for people.

Pure functions shared by the dashboard (``kpi_ui``) and the command line (``cli.py``), so
a KPI value reads the same everywhere. Nothing here imports streamlit or touches a store.
The few presentation choices that differ between a web page and a terminal (the mark for
a missing value, seconds in times, the unit after a number) are keyword arguments.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from .models import Execution

MISSING = "—"
CURRENCY_SYMBOLS = frozenset({"$", "€", "£", "¥"})


def utc_now() -> dt.datetime:
    """Now, as the store keeps times: naive UTC."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def format_number(value: float | None, missing: str = MISSING) -> str:
    """``1,234`` for whole numbers, ``1,234.50`` otherwise."""
    if value is None:
        return missing
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def format_value(
    value: float | None, unit: str = "", missing: str = MISSING, *, unit_last: bool = False
) -> str:
    """A KPI value with its unit: ``$5,506,100.50``, ``8%``, ``19,117 orders``.

    ``unit_last`` always writes the unit after the number (``5,506,100.50 $``), the
    terminal's form, which lines up in columns and parses back easily.
    """
    if value is None:
        return missing
    text = format_number(value)
    unit = (unit or "").strip()
    if not unit:
        return text
    if unit_last:
        return f"{text} {unit}"
    if unit in CURRENCY_SYMBOLS:
        return f"-{unit}{text[1:]}" if text.startswith("-") else f"{unit}{text}"
    if unit == "%":
        return f"{text}%"
    return f"{text} {unit}"


def format_change(change: float, unit: str = "") -> str:
    """A signed difference of two values: ``+$1,200``, ``-3%``, ``no change``."""
    if change == 0:
        return "no change"
    return ("+" if change > 0 else "") + format_value(change, unit)


def format_time(
    moment: dt.datetime | None, missing: str = MISSING, *, seconds: bool = False, zone: bool = True
) -> str:
    """A stored (naive UTC) time: ``2025-03-01 14:05 UTC``; the CLI omits the zone."""
    if moment is None:
        return missing
    text = moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return f"{text} UTC" if zone else text


def time_ago(moment: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """``just now``, ``5 minutes ago``, ``2 days ago``; ``never`` for no time."""
    if moment is None:
        return "never"
    seconds = max(0, int(((now or utc_now()) - moment).total_seconds()))
    for size, word in ((86_400, "day"), (3_600, "hour"), (60, "minute")):
        if seconds >= size:
            n = seconds // size
            return f"{n} {word}{'s' if n != 1 else ''} ago"
    return "just now"


def format_duration(ms: float | None, missing: str = MISSING) -> str:
    """``535 ms``, ``4.2 s``, ``1 min 1 s``."""
    if ms is None:
        return missing
    if ms < 1_000:
        return f"{ms:.0f} ms"
    seconds = ms / 1_000
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def format_params(params: Mapping[str, Any] | None, missing: str = MISSING) -> str:
    """``region=North, start_date=2025-01-01`` (also audit details, in the CLI)."""
    if not params:
        return missing
    return ", ".join(f"{k}={v}" for k, v in params.items())


def as_text(value: Any, missing: str = MISSING) -> str:
    """Any stored value as one string: JSON for lists and dicts."""
    if value is None:
        return missing
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def run_duration_ms(execution: Execution, now: dt.datetime | None = None) -> float | None:
    """How long a finished run took, or how long a running one has been running."""
    if execution.execution_time_ms is not None:
        return execution.execution_time_ms
    if execution.started_at is None:
        return None
    end = execution.finished_at or now or utc_now()
    return (end - execution.started_at).total_seconds() * 1_000
