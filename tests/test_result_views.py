"""Sorting and filtering a run's stored rows: over every row, checked against the same
ORDER BY / WHERE run directly on the source, on SQLite and PostgreSQL stores."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kpi_store import KPIStore, ValidationError
from kpi_store.result_views import VIEWS_KEPT_PER_RUN
from kpi_store.schema import kpi_result_view_rows, kpi_result_views

NAMES = ["Ånsgar", "bob", "Bob", "carla, jr.", 'dee "d"', "=sum(1)", "", None, "émile", "Zoë"]
ROWS = 103


@pytest.fixture()
def people_db(tmp_path: Path) -> Path:
    """103 rows with ints, floats, text in mixed case, dates, empty text and NULLs."""
    path = tmp_path / "people.db"
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, score REAL, visits INTEGER,"
            " joined TEXT)"
        )
        connection.executemany(
            "INSERT INTO people VALUES (?, ?, ?, ?, ?)",
            [
                (
                    i,
                    NAMES[i % len(NAMES)],
                    None if i % 11 == 0 else round((i * 37 % 101) / 7, 3),
                    i % 6,
                    f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
                )
                for i in range(1, ROWS + 1)
            ],
        )
    connection.close()
    return path


@pytest.fixture()
def people_run(store: KPIStore, people_db: Path) -> Iterator[tuple[KPIStore, int]]:
    store.add_data_source("people", f"sqlite:///{people_db}", "setup")
    kpi = store.create_kpi(
        {
            "name": "People",
            "data_source": "people",
            "sql": "SELECT id, name, score, visits, joined FROM people ORDER BY id",
            "aggregation": "count",
        },
        "setup",
    )
    run = store.execute(kpi.id, actor="setup")
    assert run.status == "success" and run.row_count == ROWS
    yield store, run.id


def source_ids(people_db: Path, where: str = "1", order: str = "id", *args: Any) -> list[int]:
    connection = sqlite3.connect(people_db)
    try:
        query = f"SELECT id FROM people WHERE {where} ORDER BY {order}, id"
        return [row[0] for row in connection.execute(query, args)]
    finally:
        connection.close()


def all_ids(store: KPIStore, run_id: int, page_size: int = 10, **view: Any) -> list[int]:
    first = store.result_page(run_id, 1, page_size, **view)
    ids = [row[0] for row in first.rows]
    for number in range(2, first.total_pages + 1):
        ids += [row[0] for row in store.result_page(run_id, number, page_size, **view).rows]
    assert len(ids) == first.total
    return ids


NULLS_LAST = "{0} IS NULL, {0}"


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ([("score", "desc")], "score IS NULL, score DESC"),
        ([("score", "asc")], "score IS NULL, score"),
        ([("visits", "asc"), ("score", "desc")], "visits, score IS NULL, score DESC"),
        ([("joined", "desc")], "joined DESC"),
        ([("name", "asc")], "name IS NULL, name"),
    ],
)
def test_a_sort_orders_every_row_as_sql_on_the_source_does(
    people_run: tuple[KPIStore, int], people_db: Path, sort: list[Any], order: str
) -> None:
    store, run_id = people_run
    assert all_ids(store, run_id, sort=sort) == source_ids(people_db, order=order)


@pytest.mark.parametrize(
    ("filters", "where", "args"),
    [
        ([{"column": "name", "op": "contains", "value": "BO"}], "lower(name) LIKE '%bo%'", ()),
        ([{"column": "name", "op": "equals", "value": "bob"}], "lower(name) = 'bob'", ()),
        ([{"column": "name", "op": "starts_with", "value": "c"}], "lower(name) LIKE 'c%'", ()),
        ([{"column": "name", "op": "contains", "value": "%"}], "0", ()),  # a literal %
        ([{"column": "name", "op": "is_empty"}], "name IS NULL OR name = ''", ()),
        ([{"column": "name", "op": "not_empty"}], "name IS NOT NULL AND name != ''", ()),
        (
            [{"column": "score", "op": "between", "min": 3, "max": 9.5}],
            "score BETWEEN 3 AND 9.5",
            (),
        ),
        ([{"column": "score", "op": "between", "max": 2}], "score <= 2", ()),
        ([{"column": "visits", "op": "equals", "value": "4"}], "visits = 4", ()),
        (
            [{"column": "joined", "op": "between", "min": "2024-03-01", "max": "2024-05-31"}],
            "joined BETWEEN '2024-03-01' AND '2024-05-31'",
            (),
        ),
        (
            [
                {"column": "visits", "op": "between", "min": 2},
                {"column": "name", "op": "not_empty"},
                {"column": "score", "op": "not_empty"},
            ],
            "visits >= 2 AND name != '' AND score IS NOT NULL",
            (),
        ),
    ],
)
def test_filters_keep_exactly_the_rows_sql_on_the_source_keeps(
    people_run: tuple[KPIStore, int],
    people_db: Path,
    filters: list[dict[str, Any]],
    where: str,
    args: tuple[Any, ...],
) -> None:
    store, run_id = people_run
    expected = source_ids(people_db, where, "id", *args)
    assert all_ids(store, run_id, filters=filters) == expected
    assert store.result_page(run_id, 1, 7, filters=filters).total == len(expected)


def test_non_ascii_text_is_found_in_any_case_where_the_database_folds_it(
    people_run: tuple[KPIStore, int],
) -> None:
    store, run_id = people_run
    page = store.result_page(
        run_id, 1, 50, filters=[{"column": "name", "op": "contains", "value": "zoë"}]
    )
    assert {row[1] for row in page.rows} == {"Zoë"}


def test_sorted_and_filtered_together_with_an_empty_last_page_refused(
    people_run: tuple[KPIStore, int], people_db: Path
) -> None:
    store, run_id = people_run
    view = {
        "sort": [("score", "desc")],
        "filters": [{"column": "name", "op": "contains", "value": "b"}],
    }
    expected = source_ids(people_db, "lower(name) LIKE '%b%'", "score IS NULL, score DESC")
    assert all_ids(store, run_id, 4, **view) == expected
    with pytest.raises(ValidationError, match="does not exist"):
        store.result_page(run_id, 1 + -(-len(expected) // 4), 4, **view)


def test_a_view_is_computed_once_and_a_run_keeps_only_its_recent_views(
    people_run: tuple[KPIStore, int],
) -> None:
    store, run_id = people_run

    def views() -> int:
        with store.engine.connect() as connection:
            return connection.execute(
                sa.select(sa.func.count()).select_from(kpi_result_views)
            ).scalar_one()

    for _ in range(3):
        store.result_page(run_id, 2, 10, sort=[("score", "asc")])
        store._view_builder.settle()  # a sort alone is kept in the background
    assert views() == 1
    for visits in range(VIEWS_KEPT_PER_RUN + 3):
        store.result_page(
            run_id, 1, 10, filters=[{"column": "visits", "op": "equals", "value": visits}]
        )
    assert views() == VIEWS_KEPT_PER_RUN
    store.delete_kpi(store.execution(run_id).kpi_id, "setup")
    with store.engine.connect() as connection:
        left = connection.execute(sa.select(sa.func.count()).select_from(kpi_result_view_rows))
        assert left.scalar_one() == 0 and views() == 0


def csv_ids(data: bytes | str) -> list[int]:
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    return [int(row[0]) for row in list(csv.reader(io.StringIO(text)))[1:]]


def test_downloads_follow_the_view_and_the_audit_says_which(
    people_run: tuple[KPIStore, int], people_db: Path, tmp_path: Path
) -> None:
    store, run_id = people_run
    view = {
        "sort": [("visits", "desc")],
        "filters": [{"column": "score", "op": "between", "min": 5}],
    }
    expected = source_ids(people_db, "score >= 5", "visits DESC")
    out = tmp_path / "view.csv"
    assert store.export_csv(run_id, out, "ann", **view) == len(expected)
    assert csv_ids(out.read_text(encoding="utf-8")) == expected
    assert csv_ids(store.page_csv(run_id, 2, 5, actor="ann", **view)) == expected[5:10]
    grant = store.export_link(run_id, "ann", **view)
    _grant, chunks = store.open_export(grant.token)
    assert csv_ids("".join(chunks)) == expected
    entries = store.audit_log(action="EXPORT", limit=3)
    assert all(e.details["view"]["sort"] == [["visits", "desc"]] for e in entries)
    assert [e.details["rows"] for e in entries] == [len(expected), 5, len(expected)]


@pytest.mark.parametrize(
    ("view", "message"),
    [
        ({"sort": [("nope", "asc")]}, "no column 'nope'; its columns are: id, name"),
        ({"sort": [("score", "up")]}, "'asc' or 'desc'"),
        (
            {"filters": [{"column": "score", "op": "like", "value": "x"}]},
            "needs a column and an op",
        ),
        ({"filters": [{"column": "score", "op": "between"}]}, "needs a min or a max"),
        ({"filters": [{"column": "score", "op": "between", "min": "ten"}]}, "takes numbers"),
        ({"filters": [{"column": "name", "op": "contains"}]}, "needs a value"),
        ({"sort": [("id", "asc")] * 6}, "at most 5 columns"),
    ],
)
def test_a_bad_sort_or_filter_is_refused_by_name(
    people_run: tuple[KPIStore, int], view: dict[str, Any], message: str
) -> None:
    store, run_id = people_run
    with pytest.raises(ValidationError, match=message):
        store.result_page(run_id, 1, 10, **view)
    with pytest.raises(ValidationError, match=message):
        store.export_link(run_id, "ann", **view)


@pytest.mark.parametrize("top_n_rows", [0, 10**9], ids=["kept-order", "sorted-on-the-spot"])
def test_sorted_on_the_spot_and_kept_order_give_the_same_pages(
    people_run: tuple[KPIStore, int],
    people_db: Path,
    monkeypatch: pytest.MonkeyPatch,
    top_n_rows: int,
) -> None:
    from kpi_store import result_views

    store, run_id = people_run
    monkeypatch.setattr(result_views, "TOP_N_ROWS", top_n_rows)
    sort = [("visits", "asc"), ("name", "desc")]
    expected = source_ids(people_db, order="visits, name IS NULL, name DESC")
    assert all_ids(store, run_id, 9, sort=sort) == expected
    store._view_builder.settle()  # every order asked for is kept by now
    with store.engine.connect() as connection:
        kept = connection.execute(sa.select(sa.func.count()).select_from(kpi_result_views))
        assert kept.scalar_one() == 1
