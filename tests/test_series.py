"""The official number and its series: official runs vs explorations, targets per
parameter value, "no data", period comparisons (previous period, last year, to date,
target) and backfill, checked against sums computed directly in SQL on the source."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kpi_store import RAG, KPIStore, RunStatus, ValidationError
from kpi_store.series import key_of

ROOT = Path(__file__).resolve().parents[1]
REGIONS = ("east", "west")
FIRST, LAST = dt.date(2023, 1, 1), dt.date(2025, 12, 31)
SQL = """SELECT region, SUM(amount) AS total FROM daily
WHERE day >= :start AND day <= :end AND (:region = 'All' OR region = :region)
GROUP BY region"""


@pytest.fixture()
def daily_db(tmp_path: Path) -> Path:
    """One row per day and region, 2023 to 2025, amounts in cents that differ by day."""
    path = tmp_path / "daily.db"
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE daily (day TEXT, region TEXT, amount REAL)")
        rows = []
        day = FIRST
        while day <= LAST:
            for number, region in enumerate(REGIONS, start=1):
                rows.append((day.isoformat(), region, round(day.day * number + 0.25, 2)))
            day += dt.timedelta(days=1)
        connection.executemany("INSERT INTO daily VALUES (?, ?, ?)", rows)
    connection.close()
    return path


@pytest.fixture()
def shop(store_url: str, daily_db: Path) -> Iterator[KPIStore]:
    store = KPIStore(store_url)
    store.add_data_source("daily", f"sqlite:///{daily_db}", "setup")
    try:
        yield store
    finally:
        store.close()


def period_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "Sales",
        "data_source": "daily",
        "sql": SQL,
        "parameters": [
            {"name": "start", "type": "date", "default": "2024-01-01"},
            {"name": "end", "type": "date", "default": "2024-01-31"},
            {"name": "region", "type": "str", "default": "All", "choices": ["All", *REGIONS]},
        ],
        "value_column": "total",
        "aggregation": "sum",
        "target": 1_000.0,
        "tolerance_pct": 10.0,
        "period": {"start": "start", "end": "end", "grain": "month"},
        "breakdown_column": "region",
    }
    spec.update(changes)
    return spec


def expected(daily_db: Path, start: dt.date, end: dt.date, region: str = "All") -> float | None:
    """The KPI's value, computed directly on the source."""
    with sqlite3.connect(daily_db) as connection:
        (total,) = connection.execute(
            "SELECT SUM(amount) FROM daily WHERE day >= ? AND day <= ? "
            "AND (? = 'All' OR region = ?)",
            (start.isoformat(), end.isoformat(), region, region),
        ).fetchone()
    return total


def month(year: int, number: int) -> dict[str, str]:
    first = dt.date(year, number, 1)
    last = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    return {"start": first.isoformat(), "end": last.isoformat()}


def test_official_runs_and_explorations_are_separate_series(shop: KPIStore) -> None:
    kpi = shop.create_kpi(period_spec(), "ann")
    official = shop.execute(kpi.id, month(2024, 1), "ann")
    exploration = shop.execute(kpi.id, {**month(2024, 1), "region": "east"}, "ann")
    assert official.series_key != exploration.series_key
    assert official.series_key == key_of({"region": "All"})  # the dates are the x axis

    headline = shop.headlines([kpi])[kpi.id]
    assert headline.latest is not None and headline.latest.run_id == official.id
    assert headline.last_run is not None and headline.last_run.id == exploration.id
    assert headline.exploration_runs == 1

    first, second = shop.series_list(kpi.id)
    assert (first.official, second.official) == (True, False)
    assert [p.run_id for p in first.points] == [official.id]
    assert [p.run_id for p in second.points] == [exploration.id]
    assert second.params == {"region": "east"} and "east" in second.label
    assert shop.series(kpi.id, {"region": "east"}).key == second.key


def test_a_run_over_several_periods_is_an_exploration_never_the_headline(shop: KPIStore) -> None:
    kpi = shop.create_kpi(period_spec(), "ann")
    official = shop.execute(kpi.id, month(2024, 2), "ann")
    to_date = shop.execute(kpi.id, {"start": "2024-03-01", "end": "2024-03-15"}, "ann")
    two_years = shop.execute(kpi.id, {"start": "2024-01-01", "end": "2025-12-31"}, "ann")
    assert to_date.series_key == official.series_key  # March so far: the official March
    assert two_years.series_key != official.series_key
    headline = shop.headlines([kpi])[kpi.id]
    assert headline.latest is not None and headline.latest.run_id == to_date.id
    assert headline.last_run is not None and headline.last_run.id == two_years.id
    first, second = shop.series_list(kpi.id)
    assert [p.run_id for p in first.points] == [official.id, to_date.id]
    assert [p.run_id for p in second.points] == [two_years.id] and not second.official
    assert "2025-12-31" in second.label


def test_a_pinned_parameter_set_becomes_the_official_number(shop: KPIStore) -> None:
    kpi = shop.create_kpi(period_spec(), "ann")
    shop.execute(kpi.id, month(2024, 1), "ann")
    east = shop.execute(kpi.id, {**month(2024, 1), "region": "east"}, "ann")
    shop.update_kpi(kpi.id, {"official_params": {"region": "east"}}, "ann", expected_version=1)
    pinned = shop.get_kpi(kpi.id)
    assert pinned.official_params == {"region": "east"}
    headline = shop.headlines([pinned])[kpi.id]
    assert headline.latest is not None and headline.latest.run_id == east.id
    assert shop.series_list(kpi.id)[0].params == {"region": "east"}


def test_targets_follow_the_runs_own_parameters(shop: KPIStore, daily_db: Path) -> None:
    east_total = expected(daily_db, dt.date(2024, 1, 1), dt.date(2024, 1, 31), "east")
    assert east_total is not None
    targets = [{"parameter": "region", "value": "east", "target": east_total - 1}]
    kpi = shop.create_kpi(period_spec(target=east_total * 100, targets=targets), "ann")
    everyone = shop.execute(kpi.id, month(2024, 1), "ann")
    east = shop.execute(kpi.id, {**month(2024, 1), "region": "east"}, "ann")
    assert east.value == pytest.approx(east_total)
    [point] = shop.series(kpi.id, {"region": "east"}).points
    assert (point.target, point.rag) == (east_total - 1, RAG.GREEN)  # its own target
    assert kpi.rag_status(everyone.value, everyone.params) == RAG.RED  # the KPI's target


@pytest.mark.parametrize("aggregation", ["sum", "count", "avg", "max"])
def test_no_rows_or_null_is_no_data_never_zero(shop: KPIStore, aggregation: str) -> None:
    kpi = shop.create_kpi(period_spec(aggregation=aggregation, breakdown_column=None), "ann")
    empty = shop.execute(kpi.id, month(2030, 1), "ann")  # after the data: no rows
    assert empty.status == RunStatus.SUCCESS and empty.row_count == 0
    assert empty.value is None
    assert kpi.rag_status(empty.value, empty.params) == RAG.NO_DATA
    null_kpi = shop.create_kpi(
        period_spec(
            name=f"Null {aggregation}",
            sql="SELECT NULL AS total",
            parameters=[],
            period=None,
            aggregation=aggregation,
            breakdown_column=None,
        ),
        "ann",
    )
    null_run = shop.execute(null_kpi.id, None, "ann")
    if aggregation != "count":  # one row: counted, but its value is NULL
        assert null_run.value is None
    [point] = shop.series(kpi.id).points if shop.series(kpi.id).points else [None]
    assert point is None or point.rag == RAG.NO_DATA


def test_a_future_official_period_counts_as_no_data(shop: KPIStore) -> None:
    kpi = shop.create_kpi(period_spec(), "ann")
    shop.execute(kpi.id, month(2030, 1), "ann")
    headline = shop.headlines([kpi])[kpi.id]
    assert headline.latest is not None and headline.rag == RAG.NO_DATA
    counts = shop.rag_counts([kpi], {kpi.id: headline})
    assert (counts.no_data, counts.red, counts.never_run) == (1, 0, 0)


def test_previous_period_and_last_year_use_the_shifted_dates(
    shop: KPIStore, daily_db: Path
) -> None:
    kpi = shop.create_kpi(period_spec(), "ann")
    march = shop.execute(kpi.id, month(2024, 3), "ann")
    missing = shop.compare(march.id, "previous_period")
    assert missing.missing and missing.base_params is not None
    assert (missing.base_params["start"], missing.base_params["end"]) == (
        "2024-02-01",
        "2024-02-29",  # a leap year's February, whole
    )
    assert missing.change is None and missing.change_pct is None

    compared = shop.run_comparison(march.id, "previous_period", "ann")
    february = expected(daily_db, dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    assert compared.base_value == pytest.approx(february)
    assert compared.change == pytest.approx(march.value - february)
    assert compared.change_pct == pytest.approx((march.value - february) / february * 100)
    assert compared.base_label == "2024-02"

    last_year = shop.run_comparison(march.id, "last_year", "ann")
    assert last_year.base_value == pytest.approx(
        expected(daily_db, dt.date(2023, 3, 1), dt.date(2023, 3, 31))
    )
    target = shop.compare(march.id, "target")
    assert (target.base_value, target.base_label) == (1_000.0, "target")


def test_to_date_compares_the_same_days_of_the_previous_period(
    shop: KPIStore, daily_db: Path
) -> None:
    kpi = shop.create_kpi(period_spec(), "ann")
    so_far = shop.execute(kpi.id, {"start": "2024-03-01", "end": "2024-03-30"}, "ann")
    whole = shop.compare(so_far.id, "previous_period")
    to_date = shop.compare(so_far.id, "previous_period", to_date=True)
    assert whole.base_params is not None and to_date.base_params is not None
    # Mar 1–30 is not a whole month, so both shift day by day, clamped to February's end.
    assert to_date.base_params["end"] == "2024-02-29"
    ran = shop.run_comparison(so_far.id, "previous_period", "ann", to_date=True)
    assert ran.base_value == pytest.approx(
        expected(daily_db, dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    )


def test_a_zero_base_has_no_percent_change(shop: KPIStore) -> None:
    spec = period_spec(
        sql="SELECT CASE WHEN :start < '2024-02-01' THEN 0 ELSE 5 END AS total, "
        ":end AS e, :region AS region",
        breakdown_column=None,
    )
    kpi = shop.create_kpi(spec, "ann")
    shop.execute(kpi.id, month(2024, 1), "ann")
    february = shop.execute(kpi.id, month(2024, 2), "ann")
    compared = shop.compare(february.id, "previous_period")
    assert (compared.base_value, compared.change, compared.change_pct) == (0.0, 5.0, None)


def test_comparisons_refuse_what_they_cannot_mean(shop: KPIStore) -> None:
    plain = shop.create_kpi(period_spec(name="No period", period=None), "ann")
    run = shop.execute(plain.id, month(2024, 1), "ann")
    with pytest.raises(ValidationError, match="has no period"):
        shop.compare(run.id, "last_year")
    with pytest.raises(ValidationError, match="compare_to must be one of"):
        shop.compare(run.id, "yesterday")
    other = shop.execute(plain.id, month(2024, 2), "ann")  # without a period: another series
    second = shop.execute(plain.id, month(2024, 1), "ann")
    assert shop.compare(other.id, "previous_period").base_run_id is None
    previous = shop.compare(second.id, "previous_period")
    assert (previous.base_run_id, previous.base_label) == (run.id, "previous run")


def test_backfill_queues_one_run_per_period_and_skips_done_ones(shop: KPIStore) -> None:
    kpi = shop.create_kpi(period_spec(), "ann")
    shop.execute(kpi.id, month(2024, 2), "ann")
    filled = shop.backfill(kpi.id, "2024-01-15", "2024-06-10", "ann")
    assert filled.periods == 6  # January to June: every month the range touches
    assert filled.skipped == ["2024-02"]
    assert [(r.params["start"], r.params["end"]) for r in filled.queued] == [
        (month(2024, n)["start"], month(2024, n)["end"]) for n in (1, 3, 4, 5, 6)
    ]
    assert {r.batch_id for r in filled.queued} == {filled.batch_id}
    assert all(r.status == RunStatus.PENDING for r in filled.queued)

    again = shop.backfill(kpi.id, "2024-01-01", "2024-06-30", "ann")
    assert (len(again.queued), len(again.skipped)) == (0, 6)  # queued ones count as done
    rerun = shop.backfill(kpi.id, "2024-01-01", "2024-03-31", "ann", rerun=True)
    assert len(rerun.queued) == 3
    east = shop.backfill(kpi.id, "2024-01-01", "2024-01-31", "ann", params={"region": "east"})
    assert len(east.queued) == 1 and east.queued[0].params["region"] == "east"
    [entry, *_] = shop.audit_log(action="BACKFILL")
    assert entry.details["queued"] == 1 and entry.kpi_id == kpi.id


def test_backfill_refusals_are_clear(shop: KPIStore) -> None:
    plain = shop.create_kpi(period_spec(name="No period", period=None), "ann")
    with pytest.raises(ValidationError, match="no period"):
        shop.backfill(plain.id, "2024-01-01", "2024-02-01", "ann")
    kpi = shop.create_kpi(period_spec(), "ann")
    with pytest.raises(ValidationError, match="not a date"):
        shop.backfill(kpi.id, "January", "2024-02-01", "ann")
    with pytest.raises(ValidationError, match="before"):
        shop.backfill(kpi.id, "2024-03-01", "2024-02-01", "ann")


def test_a_period_series_has_one_point_per_period_in_period_order(shop: KPIStore) -> None:
    kpi = shop.create_kpi(period_spec(), "ann")
    march = shop.execute(kpi.id, month(2024, 3), "ann")
    shop.execute(kpi.id, month(2024, 1), "ann")
    january_again = shop.execute(kpi.id, month(2024, 1), "ann")
    points = shop.series(kpi.id).points
    assert [p.period_label for p in points] == ["2024-01", "2024-03"]
    assert [p.run_id for p in points] == [january_again.id, march.id]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"period": {"start": "region", "end": "end"}}, "must name a date parameter"),
        ({"period": {"start": "end", "end": "end"}}, "two different parameters"),
        ({"targets": [{"parameter": "nope", "value": 1, "target": 2}]}, "not a parameter"),
        ({"targets": [{"parameter": "region", "value": "north", "target": 2}]}, "choices"),
        ({"official_params": {"region": "north"}}, "not one of its choices"),
        ({"breakdown_column": "region", "aggregation": "avg"}, "additive aggregation"),
    ],
)
def test_the_official_number_fields_are_checked(
    shop: KPIStore, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        shop.create_kpi(period_spec(**changes), "ann")


def cli(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kpi_store", "--store", store_url, "--actor", "cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_sqlite_backfill_and_compare_from_the_command_line(
    shop: KPIStore, store_url: str, daily_db: Path
) -> None:
    kpi = shop.create_kpi(period_spec(), "ann")
    done = cli(store_url, "backfill", "Sales", "2024-01-01", "2024-03-31")
    assert done.returncode == 0, done.stderr
    assert "Queued 3 of 3 period(s) of 'Sales'" in done.stdout
    again = cli(store_url, "backfill", str(kpi.id), "2024-01-01", "2024-03-31")
    assert "Queued 0 of 3" in again.stdout and "skipped 3" in again.stdout

    march = shop.execute(kpi.id, month(2024, 3), "ann")
    missing = cli(store_url, "compare", str(march.id))
    assert "2024-02: not run yet" in missing.stdout
    compared = cli(store_url, "compare", str(march.id), "--run-missing")
    assert compared.returncode == 0, compared.stderr
    february = expected(daily_db, dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    assert f"2024-02: {february:,.2f}" in compared.stdout
    bad = cli(store_url, "backfill", "Sales", "2024-03-01", "2024-01-01")
    assert bad.returncode == 2 and "before" in bad.stderr
