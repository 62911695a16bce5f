"""Unusual values (``KPIStore.unusual`` / ``unusual_flags``): the robust band on known
numbers, then seeded series run for real from a source whose numbers the test writes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kpi_store import KPIStore, NotFoundError
from kpi_store.unusual import MAD_SCALE, MAX_COMPARABLE, Band, outside, robust_band

ACTOR = "tester"
NORMAL = [100.0, 102.0, 98.0, 101.0, 99.0, 103.0, 97.0, 100.0]  # median 100, MAD 1.5


# -- the band, on known numbers ----------------------------------------------------------------


def test_the_band_of_known_numbers() -> None:
    band = robust_band(NORMAL)
    assert band is not None
    half = 3 * MAD_SCALE * 1.5
    assert (band.median, band.mad, band.count) == (100.0, 1.5, 8)
    assert band.low == pytest.approx(100 - half) and band.high == pytest.approx(100 + half)
    assert band.low == pytest.approx(93.3283) and band.high == pytest.approx(106.6717)
    nine = robust_band([1, 2, 3, 4, 5, 6, 7, 8, 9])  # deviations 4 3 2 1 0 1 2 3 4: MAD 2
    assert nine is not None and (nine.median, nine.mad) == (5, 2)
    assert (nine.low, nine.high) == pytest.approx((5 - 6 * MAD_SCALE, 5 + 6 * MAD_SCALE))


def test_fewer_than_eight_values_have_no_band() -> None:
    assert robust_band(NORMAL[:7]) is None
    assert robust_band([]) is None


def test_mad_zero_makes_the_band_one_value() -> None:
    band = robust_band([5.0] * 6 + [1.0, 9.0])  # most values equal: MAD 0
    assert band == Band(median=5.0, mad=0.0, low=5.0, high=5.0, count=8)
    assert not outside(5.0, band)
    assert outside(5.01, band) and outside(4.99, band)
    assert not outside(5.0 + 1e-12, band)  # the same data summed in another order


def test_the_band_is_not_dragged_by_an_outlier() -> None:
    band = robust_band([*NORMAL, 10_000.0])
    assert band is not None and band.median == 100.0 and band.high < 110
    assert not outside(104.0, band) and outside(120.0, band)


# -- seeded series, run for real ------------------------------------------------------------------


def make_source(path: Path) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE daily (region TEXT, amount REAL)")
        connection.execute("CREATE TABLE monthly (month TEXT, amount REAL)")
        connection.executemany("INSERT INTO daily VALUES (?, ?)", [("north", 0.0), ("south", 0.0)])
    connection.close()


def set_value(path: Path, table: str, where: str, key: str, value: float) -> None:
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(f"UPDATE {table} SET amount = ? WHERE {where} = ?", (value, key))
        if connection.total_changes == 0:
            connection.execute(f"INSERT INTO {table} VALUES (?, ?)", (key, value))
    connection.close()


@pytest.fixture()
def story(store: KPIStore, tmp_path: Path) -> Iterator[tuple[KPIStore, Path]]:
    path = tmp_path / "story.db"
    make_source(path)
    store.add_data_source("story", f"sqlite:///{path}", ACTOR)
    yield store, path


def daily_kpi(store: KPIStore) -> int:
    spec: dict[str, Any] = {
        "name": "Daily total",
        "data_source": "story",
        "sql": "SELECT SUM(amount) AS total FROM daily WHERE region = :region",
        "parameters": [
            {
                "name": "region",
                "type": "str",
                "default": "north",
                "choices": ["north", "south", "west"],
            }
        ],
        "value_column": "total",
    }
    return store.create_kpi(spec, ACTOR).id


def run_value(store: KPIStore, path: Path, kpi_id: int, value: float, region: str = "north") -> int:
    set_value(path, "daily", "region", region, value)
    run = store.execute(kpi_id, {"region": region}, ACTOR)
    assert run.status == "success" and run.value == value, run.error
    return run.id


def test_an_outlier_after_eight_normal_runs_is_flagged(story: tuple[KPIStore, Path]) -> None:
    store, path = story
    kpi = daily_kpi(store)
    normal = [run_value(store, path, kpi, v) for v in NORMAL[:4]]
    run_value(store, path, kpi, 1_000.0, region="south")  # another parameter set
    normal += [run_value(store, path, kpi, v) for v in NORMAL[4:7]]
    seventh = store.unusual(normal[-1], actor=ACTOR)
    assert seventh.unusual is None and seventh.comparable_run_ids == normal[:6]
    eighth = store.unusual(run_value(store, path, kpi, NORMAL[7]), actor=ACTOR)
    assert eighth.unusual is None and eighth.comparable_run_ids == normal
    assert "7 previous comparable runs; at least 8 are needed" in eighth.reason
    normal.append(eighth.run_id)

    outlier = store.unusual(run_value(store, path, kpi, 150.0), actor=ACTOR)
    assert outlier.unusual is True and outlier.side == "above" and outlier.value == 150.0
    assert outlier.comparable_run_ids == normal  # the south run is not comparable
    assert (outlier.median, outlier.mad) == (100.0, 1.5)
    assert (outlier.low, outlier.high) == pytest.approx((93.3283, 106.6717))
    assert outlier.reason.startswith("Unusual: 150 is above the usual range 93.33 to 106.67")
    assert "median 100 of the 8 previous comparable runs" in outlier.reason

    usual = store.unusual(run_value(store, path, kpi, 104.0), actor=ACTOR)
    assert usual.unusual is False and usual.side is None
    assert usual.comparable_run_ids == [*normal, outlier.run_id]
    assert usual.reason.startswith("104 is within the usual range")
    low = store.unusual(run_value(store, path, kpi, 50.0), actor=ACTOR)
    assert low.unusual is True and low.side == "below"


def test_a_different_parameter_set_is_not_comparable(story: tuple[KPIStore, Path]) -> None:
    store, path = story
    kpi = daily_kpi(store)
    for value in NORMAL:
        run_value(store, path, kpi, value)
    south = store.unusual(run_value(store, path, kpi, 150.0, region="south"), actor=ACTOR)
    assert south.unusual is None and south.comparable_run_ids == []
    assert "0 previous comparable runs" in south.reason


def test_a_version_with_other_sql_starts_a_new_family(story: tuple[KPIStore, Path]) -> None:
    store, path = story
    kpi = daily_kpi(store)
    before = [run_value(store, path, kpi, v) for v in NORMAL]
    store.update_kpi(kpi, {"description": "Only words"}, ACTOR, expected_version=1)
    same_family = store.unusual(run_value(store, path, kpi, 150.0), actor=ACTOR)
    assert same_family.unusual is True and same_family.comparable_run_ids == before
    sql = "SELECT SUM(amount) * 1 AS total FROM daily WHERE region = :region"
    store.update_kpi(kpi, {"sql": sql}, ACTOR, expected_version=2)
    new_family = store.unusual(run_value(store, path, kpi, 150.0), actor=ACTOR)
    assert new_family.unusual is None and new_family.comparable_run_ids == []


def test_runs_without_a_value_or_not_finished_are_not_judged(
    story: tuple[KPIStore, Path],
) -> None:
    store, path = story
    kpi = daily_kpi(store)
    for value in NORMAL:
        run_value(store, path, kpi, value)
    empty = store.execute(kpi, {"region": "west"}, ACTOR)  # no rows for west: SUM is NULL
    assert empty.status == "success" and empty.value is None
    no_value = store.unusual(empty.id, actor=ACTOR)
    assert no_value.unusual is None and "has no value (no data)" in no_value.reason
    queued = store.unusual(store.submit(kpi, actor=ACTOR).id, actor=ACTOR)
    assert queued.unusual is None and "has not finished" in queued.reason
    flagged = store.unusual(run_value(store, path, kpi, 150.0), actor=ACTOR)
    assert flagged.unusual is True and len(flagged.comparable_run_ids) == 8
    with pytest.raises(NotFoundError):
        store.unusual(10**9, actor=ACTOR)


def test_at_most_the_previous_thirty_runs_count(story: tuple[KPIStore, Path]) -> None:
    store, path = story
    kpi = daily_kpi(store)
    ids = [run_value(store, path, kpi, 100.0 + (i % 5)) for i in range(MAX_COMPARABLE + 3)]
    check = store.unusual(ids[-1], actor=ACTOR)
    assert check.comparable_run_ids == ids[-1 - MAX_COMPARABLE : -1]


def test_flags_for_a_whole_series_take_a_few_queries(story: tuple[KPIStore, Path]) -> None:
    store, path = story
    kpi = daily_kpi(store)
    ids = [run_value(store, path, kpi, v) for v in [*NORMAL, 150.0, 101.0, 99.0]]
    ids.append(run_value(store, path, kpi, 100.0, region="south"))
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        flags = store.unusual_flags([*ids, 10**9], actor=ACTOR)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)
    assert len(statements) <= 5, statements
    assert list(flags) == ids  # the unknown id is left out
    assert flags == {i: store.unusual(i, actor=ACTOR) for i in ids}
    assert [flags[i].unusual for i in ids] == [None] * 8 + [True, False, False, None]


# -- a period KPI: earlier periods, one run per period ------------------------------------------


def month_kpi(store: KPIStore) -> int:
    spec: dict[str, Any] = {
        "name": "Monthly total",
        "data_source": "story",
        "sql": "SELECT SUM(amount) AS total FROM monthly WHERE month BETWEEN :start AND :end",
        "parameters": [
            {"name": "start", "type": "date", "default": "2024-01-01"},
            {"name": "end", "type": "date", "default": "2024-01-31"},
        ],
        "value_column": "total",
        "period": {"start": "start", "end": "end", "grain": "month"},
    }
    return store.create_kpi(spec, ACTOR).id


def run_month(store: KPIStore, path: Path, kpi_id: int, month: int, value: float) -> int:
    first = f"2024-{month:02d}-01"
    set_value(path, "monthly", "month", first, value)
    run = store.execute(kpi_id, {"start": first, "end": f"2024-{month:02d}-28"}, ACTOR)
    assert run.status == "success" and run.value == value, run.error
    return run.id


def test_a_period_kpi_is_judged_against_earlier_periods(story: tuple[KPIStore, Path]) -> None:
    store, path = story
    kpi = month_kpi(store)
    october = run_month(store, path, kpi, 10, 150.0)  # run first: no earlier period yet
    assert store.unusual(october, actor=ACTOR).comparable_run_ids == []
    values = [100.0, 102.0, 98.0, 101.0, 99.0, 103.0, 97.0, 100.0, 101.0]  # Jan .. Sep
    months = {m: run_month(store, path, kpi, m, v) for m, v in enumerate(values, start=1)}
    wrong_march = months[3]
    months[3] = run_month(store, path, kpi, 3, 98.0)  # March run again: the newest counts
    november = run_month(store, path, kpi, 11, 100.0)  # a later period is not "previous"
    check = store.unusual(october, actor=ACTOR)
    assert check.comparable_run_ids == [months[m] for m in range(1, 10)]
    assert wrong_march not in check.comparable_run_ids and november not in check.comparable_run_ids
    assert check.unusual is True and "of the 9 previous comparable periods" in check.reason
    flags = store.unusual_flags([october, november], actor=ACTOR)
    assert flags[october] == check
    assert flags[november].comparable_run_ids == [*(months[m] for m in range(1, 10)), october]
    assert flags[november].unusual is False
