"""Period arithmetic (kpi_store.periods): properties over 1900-2200 at every grain, and the
cases the rules name."""

from __future__ import annotations

import calendar
from datetime import date, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kpi_store.periods import (
    MAX_PERIODS,
    Period,
    comparison_range,
    is_relative_date,
    is_whole,
    period_end,
    period_of,
    period_start,
    periods_between,
    relative_date,
    shift,
)
from kpi_store.vocabulary import CompareTo, Grain

days = st.dates(date(1900, 1, 1), date(2200, 12, 31))
grains = st.sampled_from(list(Grain))
month_grains = st.sampled_from([Grain.MONTH, Grain.QUARTER, Grain.YEAR])
steps = st.integers(-100, 100)
comparisons = st.sampled_from([CompareTo.PREVIOUS_PERIOD, CompareTo.LAST_YEAR])
leap_years = st.sampled_from([year for year in range(1900, 2201) if calendar.isleap(year)])
MONTHS = {Grain.MONTH: 1, Grain.QUARTER: 3, Grain.YEAR: 12}
SHORTEST_DAYS = {Grain.DAY: 1, Grain.WEEK: 7, Grain.MONTH: 28, Grain.QUARTER: 90, Grain.YEAR: 365}


def month_number(day: date) -> int:
    return day.year * 12 + day.month


def length(start: date, end: date) -> int:
    return (end - start).days + 1


# --- shift -------------------------------------------------------------------------------


@given(days, month_grains, steps)
def test_shift_by_months_clamps_the_day_and_moves_exactly_n_grains(
    day: date, grain: Grain, n: int
) -> None:
    moved = shift(day, grain, n)
    assert month_number(moved) - month_number(day) == n * MONTHS[grain]
    assert moved.day <= day.day
    if day.day <= calendar.monthrange(moved.year, moved.month)[1]:
        assert moved.day == day.day
    else:
        assert moved == period_end(moved, Grain.MONTH)


@given(days, st.sampled_from([Grain.DAY, Grain.WEEK]), steps)
def test_shift_by_days_and_weeks_is_exact(day: date, grain: Grain, n: int) -> None:
    moved = shift(day, grain, n)
    assert (moved - day).days == n * (7 if grain == Grain.WEEK else 1)
    assert shift(moved, grain, -n) == day


@given(days, grains, steps)
def test_shift_round_trips_when_nothing_is_clamped(day: date, grain: Grain, n: int) -> None:
    assume(day.day <= 28)
    assert shift(shift(day, grain, n), grain, -n) == day


@given(leap_years, st.integers(-100, 100))
def test_29_february_becomes_28_february_in_common_years(year: int, n: int) -> None:
    moved = shift(date(year, 2, 29), Grain.YEAR, n)
    assert moved == date(year + n, 2, 29 if calendar.isleap(year + n) else 28)


@given(st.integers(1900, 2200))
def test_month_ends_land_on_the_last_day_of_february(year: int) -> None:
    february_end = 29 if calendar.isleap(year) else 28
    assert shift(date(year, 1, 31), Grain.MONTH, 1) == date(year, 2, february_end)
    assert shift(date(year, 3, 31), Grain.MONTH, -1) == date(year, 2, february_end)
    assert shift(date(year, 2, february_end), Grain.MONTH, 1) == date(year, 3, february_end)


def test_shift_examples() -> None:
    assert shift(date(2024, 1, 31), Grain.MONTH, 1) == date(2024, 2, 29)
    assert shift(date(2025, 1, 31), Grain.MONTH, 1) == date(2025, 2, 28)
    assert shift(date(2024, 2, 29), Grain.YEAR, 1) == date(2025, 2, 28)
    assert shift(date(2024, 2, 29), Grain.YEAR, 4) == date(2028, 2, 29)
    assert shift(date(2023, 11, 30), Grain.QUARTER, 1) == date(2024, 2, 29)
    assert shift(date(2025, 3, 7), Grain.DAY, -7) == date(2025, 2, 28)
    assert shift(date(2025, 3, 7), Grain.WEEK, 2) == date(2025, 3, 21)
    with pytest.raises(ValueError, match="outside the calendar"):
        shift(date(9999, 12, 1), Grain.MONTH, 1)


# --- periods -----------------------------------------------------------------------------


@given(days, grains)
def test_period_of_a_day_holds_it_and_is_whole(day: date, grain: Grain) -> None:
    period = period_of(day, grain)
    assert day in period
    assert is_whole(period.start, period.end, grain)
    assert period_of(period.start, grain) == period_of(period.end, grain) == period
    assert period_start(period.start, grain) == period.start


@given(days)
def test_weeks_run_monday_to_sunday_and_are_labelled_iso(day: date) -> None:
    week = period_of(day, Grain.WEEK)
    assert (week.start.weekday(), week.end.weekday()) == (0, 6)
    iso = day.isocalendar()
    assert week.label == f"{iso.year:04d}-W{iso.week:02d}"


@given(days, grains)
def test_next_and_previous_are_adjacent_and_round_trip(day: date, grain: Grain) -> None:
    period = period_of(day, grain)
    assert period.next().previous() == period == period.previous().next()
    assert period.next().start == period.end + timedelta(days=1)
    assert period.previous().end == period.start - timedelta(days=1)


def test_labels_and_edges() -> None:
    day = date(2025, 3, 7)
    expected = {
        Grain.DAY: ("2025-03-07", date(2025, 3, 7), date(2025, 3, 7)),
        Grain.WEEK: ("2025-W10", date(2025, 3, 3), date(2025, 3, 9)),
        Grain.MONTH: ("2025-03", date(2025, 3, 1), date(2025, 3, 31)),
        Grain.QUARTER: ("2025-Q1", date(2025, 1, 1), date(2025, 3, 31)),
        Grain.YEAR: ("2025", date(2025, 1, 1), date(2025, 12, 31)),
    }
    for grain, (label, start, end) in expected.items():
        assert period_of(day, grain) == Period(start, end, grain)
        assert period_of(day, grain).label == label
    assert period_of(date(2024, 12, 30), Grain.WEEK).label == "2025-W01"
    assert period_of(date(2021, 1, 1), Grain.WEEK).label == "2020-W53"
    assert period_of(date(2024, 11, 15), Grain.QUARTER).label == "2024-Q4"
    assert period_end(date(2024, 2, 10), Grain.MONTH) == date(2024, 2, 29)


def test_a_period_must_be_one_whole_period() -> None:
    with pytest.raises(ValueError, match="not one whole month"):
        Period(date(2025, 3, 2), date(2025, 3, 31), Grain.MONTH)
    with pytest.raises(ValueError, match="not one whole week"):
        Period(date(2025, 3, 3), date(2025, 3, 16), Grain.WEEK)


def test_is_whole_examples() -> None:
    assert is_whole(date(2024, 2, 1), date(2024, 2, 29), Grain.MONTH)
    assert is_whole(date(2024, 1, 1), date(2024, 6, 30), Grain.QUARTER)
    assert is_whole(date(2025, 3, 3), date(2025, 3, 16), Grain.WEEK)
    assert not is_whole(date(2024, 2, 1), date(2024, 2, 28), Grain.MONTH)
    assert not is_whole(date(2024, 2, 2), date(2024, 2, 29), Grain.MONTH)
    assert not is_whole(date(2024, 3, 31), date(2024, 3, 1), Grain.DAY)


# --- periods_between ---------------------------------------------------------------------


@st.composite
def ranges(draw: st.DrawFn) -> tuple[date, date, Grain]:
    """A first and last date at a grain, never more than 1,000 periods apart."""
    grain = draw(grains)
    first = draw(days)
    span = draw(st.integers(0, 900 * SHORTEST_DAYS[grain]))
    return first, first + timedelta(days=span), grain


@given(ranges())
def test_periods_between_partition_the_range(case: tuple[date, date, Grain]) -> None:
    first, last, grain = case
    periods = periods_between(first, last, grain)
    assert first in periods[0] and last in periods[-1]
    for before, after in zip(periods, periods[1:], strict=False):
        assert after.start == before.end + timedelta(days=1)
    assert all(is_whole(p.start, p.end, grain) and p.grain == grain for p in periods)


def test_periods_between_examples_and_refusals() -> None:
    months = periods_between(date(2025, 1, 15), date(2025, 3, 10), Grain.MONTH)
    assert [p.label for p in months] == ["2025-01", "2025-02", "2025-03"]
    assert len(periods_between(date(2025, 1, 1), date(2025, 1, 1), Grain.YEAR)) == 1
    days_1000 = periods_between(date(2000, 1, 1), date(2000, 1, 1) + timedelta(999), Grain.DAY)
    assert len(days_1000) == MAX_PERIODS
    with pytest.raises(ValueError, match="last date 2025-01-01 is before the first date"):
        periods_between(date(2025, 2, 1), date(2025, 1, 1), Grain.MONTH)
    with pytest.raises(ValueError, match="spans 1,001 day periods, more than 1,000"):
        periods_between(date(2000, 1, 1), date(2000, 1, 1) + timedelta(1000), Grain.DAY)


# --- comparison_range --------------------------------------------------------------------


@given(days, grains, comparisons)
def test_a_whole_period_compares_with_one_whole_earlier_period(
    day: date, grain: Grain, compare_to: CompareTo
) -> None:
    period = period_of(day, grain)
    compared = comparison_range(period.start, period.end, grain, compare_to)
    assert compared is not None
    start, end = compared
    assert is_whole(start, end, grain)
    assert (start, end) == (period_of(start, grain).start, period_of(start, grain).end)
    assert end < period.start
    if compare_to == CompareTo.PREVIOUS_PERIOD:
        assert end == period.start - timedelta(days=1)


@given(days, st.integers(0, 400), grains, comparisons, st.booleans())
def test_to_date_ranges_keep_their_length_unless_cut_and_stay_in_one_period(
    end: date, back: int, grain: Grain, compare_to: CompareTo, from_period_start: bool
) -> None:
    first = period_start(end, grain)
    start = first if from_period_start else max(first, end - timedelta(days=back))
    compared = comparison_range(start, end, grain, compare_to, to_date=True)
    assert compared is not None
    new_start, new_end = compared
    shifted_period = period_of(new_start, grain)
    assert new_start <= new_end <= shifted_period.end
    assert length(new_start, new_end) <= length(start, end)
    no_clamping = start.day <= 28 and new_start + (end - start) <= shifted_period.end
    if no_clamping:
        assert length(new_start, new_end) == length(start, end)
    if from_period_start:
        assert new_start == shifted_period.start


@given(days, days, st.booleans(), st.booleans())
def test_last_year_of_weeks_is_52_weeks_back_on_the_same_weekdays(
    a: date, b: date, to_date: bool, whole: bool
) -> None:
    start, end = min(a, b), max(a, b)
    if whole:
        start, end = period_start(start, Grain.WEEK), period_end(end, Grain.WEEK)
    compared = comparison_range(start, end, Grain.WEEK, CompareTo.LAST_YEAR, to_date=to_date)
    assert compared == (start - timedelta(weeks=52), end - timedelta(weeks=52))


@pytest.mark.parametrize(
    ("start", "end", "grain", "compare_to", "to_date", "expected"),
    [
        (
            "2024-02-01",
            "2024-02-29",
            "month",
            "previous_period",
            False,
            ("2024-01-01", "2024-01-31"),
        ),
        (
            "2024-03-01",
            "2024-03-31",
            "month",
            "previous_period",
            False,
            ("2024-02-01", "2024-02-29"),
        ),
        (
            "2024-03-01",
            "2024-03-30",
            "month",
            "previous_period",
            True,
            ("2024-02-01", "2024-02-29"),
        ),
        (
            "2024-03-01",
            "2024-03-31",
            "month",
            "previous_period",
            True,
            ("2024-02-01", "2024-02-29"),
        ),
        (
            "2025-03-01",
            "2025-03-15",
            "month",
            "previous_period",
            True,
            ("2025-02-01", "2025-02-15"),
        ),
        (
            "2025-03-01",
            "2025-03-15",
            "month",
            "previous_period",
            False,
            ("2025-02-01", "2025-02-15"),
        ),
        ("2024-02-01", "2024-02-29", "month", "last_year", False, ("2023-02-01", "2023-02-28")),
        (
            "2024-04-01",
            "2024-06-30",
            "quarter",
            "previous_period",
            False,
            ("2024-01-01", "2024-03-31"),
        ),
        (
            "2024-01-01",
            "2024-03-31",
            "month",
            "previous_period",
            False,
            ("2023-12-01", "2024-02-29"),
        ),
        ("2025-01-01", "2025-03-01", "year", "last_year", True, ("2024-01-01", "2024-02-29")),
        ("2024-01-01", "2024-12-31", "year", "previous_period", True, ("2023-01-01", "2023-12-31")),
        ("2024-02-29", "2024-02-29", "day", "last_year", False, ("2023-02-28", "2023-02-28")),
        ("2024-02-28", "2024-03-01", "day", "last_year", False, ("2023-02-28", "2023-03-01")),
        (
            "2025-03-03",
            "2025-03-09",
            "week",
            "previous_period",
            False,
            ("2025-02-24", "2025-03-02"),
        ),
        ("2025-03-03", "2025-03-09", "week", "last_year", False, ("2024-03-04", "2024-03-10")),
    ],
)
def test_comparison_examples(
    start: str,
    end: str,
    grain: str,
    compare_to: str,
    to_date: bool,
    expected: tuple[str, str],
) -> None:
    compared = comparison_range(
        date.fromisoformat(start),
        date.fromisoformat(end),
        Grain(grain),
        CompareTo(compare_to),
        to_date=to_date,
    )
    assert compared == (date.fromisoformat(expected[0]), date.fromisoformat(expected[1]))


def test_a_target_has_no_comparison_range_and_a_backwards_range_is_refused() -> None:
    assert (
        comparison_range(date(2025, 3, 1), date(2025, 3, 31), Grain.MONTH, CompareTo.TARGET) is None
    )
    with pytest.raises(ValueError, match="end 2025-03-01 is before its start 2025-03-31"):
        comparison_range(date(2025, 3, 31), date(2025, 3, 1), Grain.MONTH, CompareTo.LAST_YEAR)


# --- relative dates ----------------------------------------------------------------------

TODAY = date(2025, 3, 7)  # a Friday in the first quarter


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("today", "2025-03-07"),
        ("yesterday", "2025-03-06"),
        ("0 days ago", "2025-03-07"),
        ("1 day ago", "2025-03-06"),
        ("10 days ago", "2025-02-25"),
        ("start of this day", "2025-03-07"),
        ("start of last day", "2025-03-06"),
        ("start of next day", "2025-03-08"),
        ("start of this week", "2025-03-03"),
        ("start of last week", "2025-02-24"),
        ("start of next week", "2025-03-10"),
        ("end of this week", "2025-03-09"),
        ("end of last week", "2025-03-02"),
        ("end of next week", "2025-03-16"),
        ("start of this month", "2025-03-01"),
        ("start of last month", "2025-02-01"),
        ("start of next month", "2025-04-01"),
        ("end of this month", "2025-03-31"),
        ("end of last month", "2025-02-28"),
        ("end of next month", "2025-04-30"),
        ("start of this quarter", "2025-01-01"),
        ("start of last quarter", "2024-10-01"),
        ("start of next quarter", "2025-04-01"),
        ("end of this quarter", "2025-03-31"),
        ("end of last quarter", "2024-12-31"),
        ("end of next quarter", "2025-06-30"),
        ("start of this year", "2025-01-01"),
        ("start of last year", "2024-01-01"),
        ("start of next year", "2026-01-01"),
        ("end of this year", "2025-12-31"),
        ("end of last year", "2024-12-31"),
        ("end of next year", "2026-12-31"),
        ("first day of last month", "2025-02-01"),
        ("last day of last month", "2025-02-28"),
        ("first day of this week", "2025-03-03"),
        ("last day of next quarter", "2025-06-30"),
        ("first day of next year", "2026-01-01"),
        ("  Start   OF  Last MONTH ", "2025-02-01"),
        ("YESTERDAY", "2025-03-06"),
        ("3  Days  Ago", "2025-03-04"),
        ("2024-02-29", "2024-02-29"),
        (" 2025-12-31 ", "2025-12-31"),
    ],
)
def test_relative_dates(expression: str, expected: str) -> None:
    assert relative_date(expression, TODAY) == date.fromisoformat(expected)
    assert is_relative_date(expression) is ("-" not in expression)  # ISO dates are not relative


def test_relative_dates_move_from_month_ends_into_the_right_month() -> None:
    assert relative_date("end of next month", date(2024, 1, 31)) == date(2024, 2, 29)
    assert relative_date("start of last month", date(2025, 3, 31)) == date(2025, 2, 1)
    assert relative_date("end of last quarter", date(2025, 5, 31)) == date(2025, 3, 31)
    assert relative_date("start of last week", date(2025, 1, 1)) == date(2024, 12, 23)


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "   ",
        "tomorrow",
        "last month",
        "start of month",
        "start of last decade",
        "start of the last month",
        "end of this day",
        "first day of last day",
        "last day of next day",
        "3 weeks ago",
        "-3 days ago",
        "three days ago",
        "999999 days ago",
        "2025-02-30",
        "2025/03/01",
        "20250307",
        "2025-W10",
        "07-03-2025",
        "today please",
    ],
)
def test_anything_else_is_refused(expression: str) -> None:
    with pytest.raises(ValueError) as refused:
        relative_date(expression, TODAY)
    assert str(refused.value) == (
        f"'{expression.strip()}' is not a date or a relative date such as 'start of last month'"
    )
    assert not is_relative_date(expression)


def test_a_date_before_the_calendar_is_refused() -> None:
    with pytest.raises(ValueError, match="'99999 days ago' is not a date"):
        relative_date("99999 days ago", date(1, 6, 1))
