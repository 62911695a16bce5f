"""Calendar periods for period KPIs: pure date arithmetic, no database.

A period KPI runs over two inclusive dates (start, end) at a grain: day, ISO week (Monday
to Sunday), month, quarter or year.

Rules:

- ``shift`` moves a date by whole grains. Months, quarters and years keep the day of the
  month when it exists and otherwise take the month's last day (31 January + 1 month is
  28 or 29 February; 29 February 2024 + 1 year is 28 February 2025); a day is one day and
  a week seven.
- ``comparison_range``: ``previous_period`` shifts by one grain; ``last_year`` by one year,
  or by 52 weeks at the week grain so weekdays line up; ``target`` has no range.
  A range of whole periods (not asked "to date") compares with the whole shifted periods:
  1-29 February 2024 with 1-31 January, 1-31 March with 1-29 February.
  Any other range ("to date": this month so far against the same days of the previous
  month) starts at its start shifted as above and keeps its number of days, but its end
  never passes the end of the period that the original end shifts into, which for a range
  inside one period is the shifted start's period (1-30 March 2024 to date: 1-29 February).
  So a comparison is never longer than its range, and as long when nothing is cut: year to
  1 March 2025 (60 days) compares with 1 January-29 February 2024.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial

from kpi_store.vocabulary import CompareTo, Grain

MAX_PERIODS = 1000
_MONTHS = {Grain.MONTH: 1, Grain.QUARTER: 3, Grain.YEAR: 12}
_ONE_DAY = timedelta(days=1)


def _add_months(day: date, months: int) -> date:
    year, month0 = divmod(day.year * 12 + day.month - 1 + months, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(day.day, last))


def shift(day: date, grain: Grain, n: int) -> date:
    """``day`` moved ``n`` grains later (earlier when negative), clamping the day of the
    month for months, quarters and years."""
    try:
        if grain in _MONTHS:
            return _add_months(day, n * _MONTHS[grain])
        return day + timedelta(days=n * (7 if grain == Grain.WEEK else 1))
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"{day} moved by {n} {grain}(s) is outside the calendar") from exc


def period_start(day: date, grain: Grain) -> date:
    """The first day of the period at ``grain`` that holds ``day``."""
    if grain == Grain.DAY:
        return day
    if grain == Grain.WEEK:
        return day - timedelta(days=day.weekday())
    first_month = (day.month - 1) // _MONTHS[grain] * _MONTHS[grain] + 1
    return date(day.year, first_month, 1)


def period_end(day: date, grain: Grain) -> date:
    """The last day of the period at ``grain`` that holds ``day``."""
    if grain == Grain.DAY:
        return day
    if grain == Grain.WEEK:
        return period_start(day, grain) + timedelta(days=6)
    last_month = _add_months(period_start(day, grain), _MONTHS[grain] - 1)
    return last_month.replace(day=calendar.monthrange(last_month.year, last_month.month)[1])


@dataclass(frozen=True)
class Period:
    """One whole period: its first and last day (inclusive) and its grain."""

    start: date
    end: date
    grain: Grain

    def __post_init__(self) -> None:
        if self.start != period_start(self.start, self.grain) or self.end != period_end(
            self.start, self.grain
        ):
            raise ValueError(f"{self.start} to {self.end} is not one whole {self.grain}")

    @property
    def label(self) -> str:
        """How people write it: 2025-03-07, 2025-W10, 2025-03, 2025-Q1, 2025."""
        start = self.start
        if self.grain == Grain.DAY:
            return start.isoformat()
        if self.grain == Grain.WEEK:
            iso = start.isocalendar()
            return f"{iso.year:04d}-W{iso.week:02d}"
        if self.grain == Grain.MONTH:
            return f"{start.year:04d}-{start.month:02d}"
        if self.grain == Grain.QUARTER:
            return f"{start.year:04d}-Q{(start.month - 1) // 3 + 1}"
        return f"{start.year:04d}"

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day <= self.end

    def next(self) -> Period:
        """The period right after this one."""
        return period_of(self.end + _ONE_DAY, self.grain)

    def previous(self) -> Period:
        """The period right before this one."""
        return period_of(self.start - _ONE_DAY, self.grain)


def period_of(day: date, grain: Grain) -> Period:
    """The period at ``grain`` that holds ``day``."""
    return Period(period_start(day, grain), period_end(day, grain), grain)


def is_whole(start: date, end: date, grain: Grain) -> bool:
    """True when ``start`` begins a period and ``end`` (not before it) ends one."""
    return start <= end and start == period_start(start, grain) and end == period_end(end, grain)


def _step(grain: Grain, compare_to: CompareTo) -> tuple[Grain, int]:
    if compare_to == CompareTo.PREVIOUS_PERIOD:
        return grain, -1
    return (Grain.WEEK, -52) if grain == Grain.WEEK else (Grain.YEAR, -1)


def comparison_range(
    start: date, end: date, grain: Grain, compare_to: CompareTo, *, to_date: bool = False
) -> tuple[date, date] | None:
    """The dates that ``start``-``end`` is compared with (rules in the module docstring);
    None when it is compared with a target."""
    if end < start:
        raise ValueError(f"the period's end {end} is before its start {start}")
    if compare_to == CompareTo.TARGET:
        return None
    by, n = _step(grain, CompareTo(compare_to))
    if is_whole(start, end, grain) and not to_date:
        return period_start(shift(start, by, n), grain), period_end(shift(end, by, n), grain)
    new_start = shift(start, by, n)
    new_end = min(new_start + (end - start), period_end(shift(end, by, n), grain))
    return new_start, new_end


def _index(day: date, grain: Grain) -> int:
    """A period's position in the calendar: consecutive periods differ by one."""
    if grain == Grain.DAY:
        return day.toordinal()
    if grain == Grain.WEEK:
        return (day.toordinal() - 1) // 7  # date(1, 1, 1), ordinal 1, is a Monday
    return (day.year * 12 + day.month - 1) // _MONTHS[grain]


def periods_between(first: date, last: date, grain: Grain) -> list[Period]:
    """Every whole period that overlaps ``first``-``last``, in order (for backfills)."""
    if last < first:
        raise ValueError(f"the last date {last} is before the first date {first}")
    count = _index(last, grain) - _index(first, grain) + 1
    if count > MAX_PERIODS:
        raise ValueError(
            f"{first} to {last} spans {count:,} {grain} periods, more than {MAX_PERIODS:,}; "
            "choose a shorter range or a longer grain"
        )
    periods = [period_of(first, grain)]
    while len(periods) < count:
        periods.append(periods[-1].next())
    return periods


_DAYS_AGO = re.compile(r"(\d{1,5}) days? ago")
_EDGE = re.compile(
    r"(start|end|first day|last day) of (this|last|next) (day|week|month|quarter|year)"
)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_WHICH = {"this": 0, "last": -1, "next": 1}
_FIXED: dict[str, Callable[[date], date]] = {
    "today": lambda today: today,
    "yesterday": lambda today: today - _ONE_DAY,
}


def _days_ago(days: int, today: date) -> date:
    return today - timedelta(days=days)


def _edge(at_start: bool, grain: Grain, n: int, today: date) -> date:
    day = shift(today, grain, n)
    return period_start(day, grain) if at_start else period_end(day, grain)


def _relative(words: str) -> Callable[[date], date] | None:
    """How to compute a normalised relative date from today; None when it is not one."""
    if words in _FIXED:
        return _FIXED[words]
    if match := _DAYS_AGO.fullmatch(words):
        return partial(_days_ago, int(match[1]))
    match = _EDGE.fullmatch(words)
    if match is None or (match[3] == "day" and match[1] != "start"):
        return None  # "end of" and "first/last day of" name no day
    at_start = match[1] in ("start", "first day")
    return partial(_edge, at_start, Grain(match[3]), _WHICH[match[2]])


def _words(text: str) -> str:
    return " ".join(text.lower().split())


def is_relative_date(text: str) -> bool:
    """True for relative dates such as "yesterday" or "end of last month" (not ISO dates)."""
    return _relative(_words(text)) is not None


def relative_date(expression: str, today: date) -> date:
    """The date an expression names on ``today``: a relative date (any case and spacing)
    or a plain ISO date such as 2025-03-07."""
    words = _words(expression)
    refusal = (
        f"'{expression.strip()}' is not a date or a relative date such as 'start of last month'"
    )
    resolve = _relative(words)
    try:
        if resolve is not None:
            return resolve(today)
        if _ISO_DATE.fullmatch(words):
            return date.fromisoformat(words)
    except (OverflowError, ValueError) as exc:
        raise ValueError(refusal) from exc
    raise ValueError(refusal)
