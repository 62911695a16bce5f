"""Stored result rows: pages against the query run directly, frames, CSV export, the row cap."""

from __future__ import annotations

import csv
import io
import math
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kpi_store import ExecutionError, KPIStore, ValidationError
from kpi_store.config import Settings

ITEMS = 257  # a prime: no page size divides it
ITEMS_SQL = "SELECT id, label, price, qty, note FROM items ORDER BY id"

TRICKY_TEXT = [
    "plain",
    "comma, inside",
    'say "hello"',
    "line one\nline two",
    "windows\r\nline",
    "ünïcödé ✓ 日本語 😀",
    "",
    None,
    "=cmd()",
    "-not a number",
    "  padded  ",
]
TRICKY_NUMBERS = [0.1, -5.0, 1e-10, 123456789.123, None, 2.5e300, -0.0, 3.0, 7.25, None, 1 / 3]


@pytest.fixture()
def items_db(tmp_path: Path) -> Path:
    """A SQLite source with every awkward value type, 257 rows."""
    path = tmp_path / "items.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT, price REAL, qty INTEGER, "
            "note TEXT)"
        )
        connection.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?)",
            [
                (
                    i,
                    f"item {i:03d}",
                    TRICKY_NUMBERS[i % len(TRICKY_NUMBERS)],
                    None if i % 13 == 0 else (i * 7919) % 1000 - 500,
                    TRICKY_TEXT[i % len(TRICKY_TEXT)],
                )
                for i in range(1, ITEMS + 1)
            ],
        )
    connection.close()
    return path


@pytest.fixture()
def items_store(store: KPIStore, items_db: Path) -> KPIStore:
    store.add_data_source("items", f"sqlite:///{items_db}", "setup")
    return store


def run_query(store: KPIStore, sql: str, source: str = "items", **fields: Any) -> int:
    name = f"q{len(store.list_kpis(include_archived=True))}"
    kpi = store.create_kpi({"name": name, "data_source": source, "sql": sql, **fields}, "tester")
    run = store.execute(kpi.id, actor="tester")
    assert run.status == "success", run.error
    return run.id


def direct(path: Path, sql: str) -> list[list[Any]]:
    with sqlite3.connect(path) as connection:
        return [list(row) for row in connection.execute(sql)]


# -- pages ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "page_size"),
    [(1, 50), (3, 50), (6, 50), (1, 7), (19, 7), (37, 7), (1, 1), (129, 1), (257, 1), (1, 1000)],
)
def test_pages_equal_the_rows_of_the_query(
    items_store: KPIStore, items_db: Path, page: int, page_size: int
) -> None:
    execution_id = run_query(items_store, ITEMS_SQL)
    expected = direct(items_db, ITEMS_SQL)

    result = items_store.result_page(execution_id, page, page_size)

    start = (page - 1) * page_size
    assert result.rows == expected[start : start + page_size]
    assert result.total == ITEMS
    assert result.page == page and result.page_size == page_size
    assert result.total_pages == math.ceil(ITEMS / page_size)
    assert [c.name for c in result.columns] == ["id", "label", "price", "qty", "note"]


def test_every_page_together_is_the_whole_result(items_store: KPIStore, items_db: Path) -> None:
    execution_id = run_query(items_store, ITEMS_SQL)
    first = items_store.result_page(execution_id, 1, 23)
    rows = [
        row
        for number in range(1, first.total_pages + 1)
        for row in items_store.result_page(execution_id, number, 23).rows
    ]
    assert rows == direct(items_db, ITEMS_SQL)
    assert len(items_store.result_page(execution_id, first.total_pages, 23).rows) == ITEMS % 23


@pytest.mark.parametrize(
    ("page", "page_size", "field"),
    [(0, 50, "page"), (7, 50, "page"), (-1, 50, "page"), (1, 0, "page_size"),
     (1, 1001, "page_size"), (1, -5, "page_size"), ("2", 50, "page")],
)  # fmt: skip
def test_pages_out_of_range_are_refused_clearly(
    items_store: KPIStore, page: Any, page_size: Any, field: str
) -> None:
    execution_id = run_query(items_store, ITEMS_SQL)
    with pytest.raises(ValidationError) as caught:
        items_store.result_page(execution_id, page, page_size)
    assert field in caught.value.field_errors
    assert str(page if field == "page" else page_size) in str(caught.value)


def test_an_empty_result_has_one_empty_page(items_store: KPIStore) -> None:
    execution_id = run_query(items_store, "SELECT id, label FROM items WHERE id < 0")
    result = items_store.result_page(execution_id)
    assert (result.total, result.total_pages, result.rows) == (0, 1, [])
    with pytest.raises(ValidationError):
        items_store.result_page(execution_id, 2)


def test_a_failed_run_has_no_pages_and_says_why(items_store: KPIStore) -> None:
    kpi = items_store.create_kpi(
        {"name": "broken", "data_source": "items", "sql": "SELECT x FROM missing"}, "tester"
    )
    run = items_store.execute(kpi.id, actor="tester")
    assert run.status == "failed"
    with pytest.raises(ExecutionError, match=rf"Run {run.id} has no stored rows.*failed"):
        items_store.result_page(run.id)
    with pytest.raises(ExecutionError, match="failed"):
        items_store.export_csv(run.id, io.StringIO(), "tester")


def test_result_frame_has_proper_dtypes(items_store: KPIStore, items_db: Path) -> None:
    execution_id = run_query(
        items_store, "SELECT id, label, price, qty, qty > 0 AS positive FROM items ORDER BY id"
    )
    frame = items_store.result_frame(execution_id, 2, 13)

    assert list(frame.columns) == ["id", "label", "price", "qty", "positive"]
    assert frame["id"].dtype == "Int64"
    assert frame["label"].dtype == "string"
    assert frame["price"].dtype == "Float64"
    assert frame["qty"].dtype == "Int64"
    assert frame["id"].tolist() == list(range(14, 27))
    assert frame["qty"].isna().sum() == 1  # id 26 has a NULL qty
    assert pd.isna(frame.loc[frame["id"] == 26, "qty"].iloc[0])


def test_result_frame_of_duplicate_column_names(items_store: KPIStore) -> None:
    execution_id = run_query(items_store, "SELECT id, id FROM items ORDER BY id LIMIT 3")
    frame = items_store.result_frame(execution_id)
    assert list(frame.columns) == ["id", "id_2"]


# -- the row cap --------------------------------------------------------------------------------


def test_the_row_cap_truncates_instead_of_failing(store_url: str, source_db: Path) -> None:
    with KPIStore(store_url, settings=Settings.from_env().replace(row_cap=1000)) as store:
        store.add_data_source("shop", f"sqlite:///{source_db}", "setup")
        kpi = store.create_kpi(
            {
                "name": "Five thousand",
                "data_source": "shop",
                "sql": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
                "WHERE x < 5000) SELECT x FROM n",
                "aggregation": "max",
            },
            "tester",
        )
        run = store.execute(kpi.id, actor="tester")

        assert run.status == "success"
        assert run.truncated is True
        assert run.row_count == 1000
        assert run.value == 1000.0  # computed over the rows kept
        last = store.result_page(run.id, 20, 50)
        assert last.total_pages == 20 and last.rows[-1] == [1000]
        assert store.export_csv(run.id, io.StringIO(), "tester") == 1000


# -- CSV export -------------------------------------------------------------------------------


def parse_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def as_csv_cell(value: Any) -> str:
    return "" if value is None else str(value)


def test_csv_round_trip_equals_the_query_exactly(items_store: KPIStore, items_db: Path) -> None:
    execution_id = run_query(items_store, ITEMS_SQL)
    out = io.StringIO(newline="")

    count = items_store.export_csv(execution_id, out, "tester")

    header, *rows = parse_csv(out.getvalue())
    expected = direct(items_db, ITEMS_SQL)
    assert count == len(rows) == ITEMS
    assert header == ["id", "label", "price", "qty", "note"]
    assert rows == [[as_csv_cell(v) for v in row] for row in expected]
    for row, original in zip(rows, expected, strict=True):  # numbers survive exactly
        if original[2] is not None:
            assert float(row[2]) == original[2]
    assert {row[4] for row in rows} >= {t for t in TRICKY_TEXT if t}


def test_csv_to_a_path_a_text_file_and_a_binary_file_is_the_same(
    items_store: KPIStore, tmp_path: Path
) -> None:
    execution_id = run_query(items_store, ITEMS_SQL)
    text_io = io.StringIO(newline="")
    binary_io = io.BytesIO()
    path = tmp_path / "out.csv"

    assert items_store.export_csv(execution_id, path, "tester") == ITEMS
    assert items_store.export_csv(execution_id, str(tmp_path / "str.csv"), "tester") == ITEMS
    assert items_store.export_csv(execution_id, text_io, "tester") == ITEMS
    assert items_store.export_csv(execution_id, binary_io, "tester") == ITEMS
    with open(tmp_path / "handle.csv", "wb") as handle:
        assert items_store.export_csv(execution_id, handle, "tester") == ITEMS

    on_disk = path.read_bytes()
    assert on_disk == (tmp_path / "str.csv").read_bytes()
    assert on_disk == (tmp_path / "handle.csv").read_bytes()
    assert on_disk == binary_io.getvalue() == text_io.getvalue().encode("utf-8")
    assert not on_disk.startswith(b"\xef\xbb\xbf")
    assert on_disk.startswith(b"id,label,price,qty,note\r\n")


def test_excel_csv_has_a_bom_and_neutralises_formulas_not_numbers(
    items_store: KPIStore,
) -> None:
    execution_id = run_query(
        items_store,
        "SELECT '=cmd()' AS formula, '+1+2' AS plus, '@SUM(A1)' AS at, -5 AS negative, "
        "-2.5 AS negative_float, 'fine' AS text",
    )
    out = io.BytesIO()
    items_store.export_csv(execution_id, out, "tester", excel=True)
    data = out.getvalue()

    assert data.startswith(b"\xef\xbb\xbf")
    header, row = parse_csv(data.decode("utf-8-sig"))
    assert header == ["formula", "plus", "at", "negative", "negative_float", "text"]
    assert row == ["'=cmd()", "'+1+2", "'@SUM(A1)", "-5", "-2.5", "fine"]

    plain = io.StringIO(newline="")
    items_store.export_csv(execution_id, plain, "tester")
    assert parse_csv(plain.getvalue())[1][0] == "=cmd()"  # untouched without excel=True


def test_export_writes_an_export_audit_entry(items_store: KPIStore, tmp_path: Path) -> None:
    execution_id = run_query(items_store, ITEMS_SQL)
    items_store.export_csv(execution_id, tmp_path / "a.csv", "dora", excel=True)

    (entry,) = items_store.audit_log(action="EXPORT")
    assert entry.actor == "dora"
    assert entry.details == {"execution_id": execution_id, "rows": ITEMS, "excel": True}
    assert entry.kpi_id == items_store.execution(execution_id).kpi_id
    assert items_store.verify_audit().ok


def test_export_streams_more_rows_than_one_chunk(
    store: KPIStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kpi_store import results

    monkeypatch.setattr(results, "EXPORT_CHUNK_ROWS", 100)  # several chunks from 1,234 rows
    execution_id = run_query(
        store,
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1234) "
        "SELECT x, 'row ' || x AS label FROM n",
        source="shop",
    )
    path = tmp_path / "many.csv"
    assert store.export_csv(execution_id, path, "tester") == 1234
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    assert rows == [[str(x), f"row {x}"] for x in range(1, 1235)]


def test_stored_rows_do_not_depend_on_the_page_read(items_store: KPIStore, items_db: Path) -> None:
    """Two runs of the same KPI keep separate rows; paging one never shows the other."""
    first = run_query(items_store, ITEMS_SQL)
    second = run_query(items_store, "SELECT id FROM items WHERE id <= 3 ORDER BY id")
    assert items_store.result_page(second).rows == [[1], [2], [3]]
    assert items_store.result_page(first, 1, 3).rows == direct(items_db, ITEMS_SQL)[:3]
