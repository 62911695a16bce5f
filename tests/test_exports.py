"""Whole results as XLSX and Parquet: read back with openpyxl and pyarrow and compared with
the source queried directly, the Excel sheet limit, values Parquet cannot type, the audit
entries, the command line, and memory that stays flat however many rows are exported.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import duckdb
import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kpi_store import ExecutionError, KPIStore, ValidationError, exports
from kpi_store.cli import main
from kpi_store.models import Column

ROOT = Path(__file__).resolve().parents[1]
ITEMS = 257
ITEMS_SQL = "SELECT id, label, price, qty, day, note FROM items ORDER BY id"
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
    '=HYPERLINK("http://x","y")',
    "+1+2",
    "-not a number",
    "@SUM(A1)",
    "  padded  ",
    "<r><t>rich?</t></r>",
    "_x0041_ stays as typed",
    "a < b & c > d",
]
TRICKY_NUMBERS = [0.1, -5.0, 1e-10, 123456789.123, None, 2.5e300, -0.0, 3.0, 7.25, 1 / 3, 1e15]


# -- sources and runs ------------------------------------------------------------------------


@pytest.fixture()
def items_db(tmp_path: Path) -> Path:
    """A SQLite source with awkward values of every kind SQLite has (dates are its text)."""
    path = tmp_path / "items.db"
    start = dt.date(2023, 12, 30)
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT, price REAL, qty INTEGER, "
            "day TEXT, note TEXT)"
        )
        connection.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    i,
                    f"item {i:03d}",
                    TRICKY_NUMBERS[i % len(TRICKY_NUMBERS)],
                    None
                    if i % 13 == 0
                    else (i * 7919) % 1000 - 500 + (2**40 if i % 29 == 0 else 0),
                    None if i % 17 == 0 else (start + dt.timedelta(days=i)).isoformat(),
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


def run_query(store: KPIStore, sql: str, source: str = "items") -> int:
    name = f"q{len(store.list_kpis(include_archived=True))}"
    kpi = store.create_kpi({"name": name, "data_source": source, "sql": sql}, "tester")
    run = store.execute(kpi.id, actor="tester")
    assert run.status == "success", run.error
    return run.id


def direct(path: Path, sql: str) -> list[list[Any]]:
    with sqlite3.connect(path) as connection:
        return [list(row) for row in connection.execute(sql)]


# -- reading the files back ------------------------------------------------------------------

_EXCEL_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def excel_text(value: Any) -> Any:
    """Text as Excel shows it: the file escapes control characters as ``_xHHHH_`` (and a
    literal ``_x`` as ``_x005F_x``); openpyxl returns inline strings without undoing that."""
    if not isinstance(value, str):
        return value
    return _EXCEL_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


def read_xlsx(source: Path | bytes) -> tuple[list[Any], list[list[Any]]]:
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    workbook = openpyxl.load_workbook(handle, read_only=True)
    try:
        rows = [[excel_text(v) for v in row] for row in workbook.active.iter_rows(values_only=True)]
    finally:
        workbook.close()
    return rows[0], rows[1:]


def sheet_xml(source: Path | bytes) -> str:
    data = source if isinstance(source, bytes) else source.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read("xl/worksheets/sheet1.xml").decode("utf-8")


def as_excel_number(value: Any) -> Any:
    """What an Excel cell holds for a number: 16 significant digits (XlsxWriter writes
    what Excel itself keeps; Excel shows 15); whole numbers past 2**53 stay exact, as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, int) and abs(value) > 2**53:
        return str(value)
    return float(f"{value:.16g}")


# -- XLSX ------------------------------------------------------------------------------------


def test_xlsx_round_trip_equals_the_query(
    items_store: KPIStore, items_db: Path, tmp_path: Path
) -> None:
    execution_id = run_query(items_store, ITEMS_SQL)
    path = tmp_path / "items.xlsx"

    count = items_store.export_file(execution_id, path, "tester", format="xlsx")

    header, rows = read_xlsx(path)
    expected = direct(items_db, ITEMS_SQL)
    assert count == len(rows) == ITEMS
    assert header == ["id", "label", "price", "qty", "day", "note"]
    for got, want in zip(rows, expected, strict=True):
        assert got == [as_excel_number(v) for v in want]
        assert [type(v) for v in got[:2]] == [int, str]
        assert got[2] is None or isinstance(got[2], (int, float))
    assert {row[5] for row in rows} >= {t for t in TRICKY_TEXT if t}
    assert "2023-12-31" in {row[4] for row in rows}  # SQLite dates are text, and stay text
    xml = sheet_xml(path)
    assert "<f>" not in xml, "text became a formula"
    assert xml.count('t="inlineStr"') == sum(isinstance(v, str) for r in expected for v in r) + 6


def test_xlsx_header_is_bold_and_frozen_and_text_never_becomes_anything_else(
    items_store: KPIStore, tmp_path: Path
) -> None:
    injection = (
        '<r><t>x</t></r></is></c><c r="B2"><f>1+1</f></c><c r="C2" t="inlineStr"><is>'
        "<r><t>y</t></r>"
    )
    execution_id = run_query(
        items_store,
        f"SELECT '{injection}' AS \"<r>head</r>\", '=1+1' AS formula, '0042' AS zip, "
        "'http://example.com' AS link, 'TRUE' AS word",
    )
    path = tmp_path / "text.xlsx"
    items_store.export_file(execution_id, path, "tester", format="xlsx")

    header, rows = read_xlsx(path)
    assert header == ["<r>head</r>", "formula", "zip", "link", "word"]
    assert rows == [[injection, "=1+1", "0042", "http://example.com", "TRUE"]]
    xml = sheet_xml(path)
    assert "<f>" not in xml and "<hyperlink" not in xml
    workbook = openpyxl.load_workbook(path)  # (styles and panes need the full reader)
    sheet = workbook.active
    assert [cell.font.b for cell in sheet[1]] == [True] * 5
    assert [cell.font.b for cell in sheet[2]] == [False] * 5
    assert sheet.freeze_panes == "A2"
    assert [cell.data_type for cell in sheet[2]] == ["s"] * 5


@pytest.fixture()
def lake(store: KPIStore, tmp_path: Path) -> KPIStore:
    """``store`` with a DuckDB source whose columns have real types (dates, times, booleans,
    decimals, blobs): SQLite has none of those."""
    folder = tmp_path / "lake"
    folder.mkdir()
    database = folder / "typed.duckdb"
    with duckdb.connect(str(database)) as connection:
        connection.execute(
            "CREATE TABLE typed (n BIGINT, x DOUBLE, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, "
            "flag BOOLEAN, amount DECIMAL(12, 2), s VARCHAR, blob BLOB)"
        )
        connection.execute("SET TimeZone = 'UTC'")
        connection.executemany(
            "INSERT INTO typed VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    1,
                    0.1,
                    dt.date(2024, 2, 29),
                    dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
                    dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                    True,
                    decimal.Decimal("12.34"),
                    "=cmd()",
                    b"\x00\xff",
                ),
                (2, None, None, None, None, None, None, None, None),
                (
                    9_007_199_254_740_993,
                    -2.5e300,
                    dt.date(1899, 12, 31),  # before Excel's first date: stays text there
                    dt.datetime(1999, 12, 31, 23, 59, 59),
                    dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
                    False,
                    decimal.Decimal("-0.05"),
                    'ünï, "q"',
                    b"",
                ),
            ],
        )
    store.add_data_source("lake", f"duckdb:///{database}", "setup")
    return store


TYPED_SQL = "SELECT n, x, d, ts, tz, flag, amount, s, blob FROM typed ORDER BY n"


def test_typed_columns_as_the_run_recorded_them(lake: KPIStore, tmp_path: Path) -> None:
    execution_id = run_query(lake, TYPED_SQL, source="lake")
    recorded = {c.name: c.type for c in lake.execution(execution_id).columns}
    assert recorded == {
        "n": "int",
        "x": "float",
        "d": "date",
        "ts": "datetime",
        "tz": "datetime",
        "flag": "bool",
        "amount": "decimal",
        "s": "str",
        "blob": "bytes",
    }

    parquet = tmp_path / "typed.parquet"
    assert lake.export_file(execution_id, parquet, "tester", format="parquet") == 3
    table = pq.read_table(parquet)
    assert table.schema.types == [
        pa.int64(),
        pa.float64(),
        pa.date32(),
        pa.timestamp("us"),
        pa.timestamp("us", tz="UTC"),
        pa.bool_(),
        pa.string(),  # decimals keep their exact digits, as text
        pa.string(),
        pa.binary(),
    ]
    assert table.to_pylist() == [
        {
            "n": 1,
            "x": 0.1,
            "d": dt.date(2024, 2, 29),
            "ts": dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
            "tz": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            "flag": True,
            "amount": "12.34",
            "s": "=cmd()",
            "blob": b"\x00\xff",
        },
        dict.fromkeys(recorded) | {"n": 2},
        {
            "n": 9_007_199_254_740_993,
            "x": -2.5e300,
            "d": dt.date(1899, 12, 31),
            "ts": dt.datetime(1999, 12, 31, 23, 59, 59),
            "tz": dt.datetime(2024, 6, 1, 10, 0, tzinfo=dt.UTC),
            "flag": False,
            "amount": "-0.05",
            "s": 'ünï, "q"',
            "blob": b"",
        },
    ]
    stored = json.loads(table.schema.metadata[b"kpi_store.columns"])
    assert stored == [{"name": n, "type": t} for n, t in recorded.items()]
    run = json.loads(table.schema.metadata[b"kpi_store.run"])
    assert run["execution_id"] == execution_id

    xlsx = tmp_path / "typed.xlsx"
    assert lake.export_file(execution_id, xlsx, "tester", format="xlsx") == 3
    header, rows = read_xlsx(xlsx)
    assert header == list(recorded)
    assert rows == [
        [
            1,
            0.1,
            dt.datetime(2024, 2, 29),
            dt.datetime(2024, 1, 2, 3, 4, 5, 123000),  # Excel keeps milliseconds
            dt.datetime(2024, 1, 2, 3, 4, 5),  # an instant, as UTC time
            True,
            12.34,
            "=cmd()",
            "00ff",  # bytes as hex text, like the CSV
        ],
        [2, None, None, None, None, None, None, None, None],
        [
            "9007199254740993",  # past 2**53: as text, exact
            -2.5e300,
            "1899-12-31",
            dt.datetime(1999, 12, 31, 23, 59, 59),
            dt.datetime(2024, 6, 1, 10, 0),
            False,
            -0.05,
            'ünï, "q"',
            "",  # an empty blob: empty text, not an empty cell (that is NULL)
        ],
    ]
    full = openpyxl.load_workbook(xlsx).active
    assert full["C2"].number_format == "yyyy-mm-dd" and full["C2"].is_date
    assert full["D2"].number_format == "yyyy-mm-dd hh:mm:ss" and full["D2"].is_date


def test_xlsx_refuses_a_result_larger_than_a_sheet_before_writing(
    items_store: KPIStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert exports.XLSX_MAX_DATA_ROWS == 1_048_575  # Excel's 1,048,576 rows, less the header
    with pytest.raises(ValidationError) as refused:
        exports.check_xlsx_fits(1_200_000, [Column(name="a", type="int")])
    assert str(refused.value) == (
        "This result has 1,200,000 rows; an Excel sheet holds at most 1,048,575 below its "
        "header. Export it as CSV or Parquet instead."
    )

    monkeypatch.setattr(exports, "XLSX_MAX_DATA_ROWS", 10)
    eleven = run_query(items_store, "SELECT id FROM items WHERE id <= 11 ORDER BY id")
    ten = run_query(items_store, "SELECT id FROM items WHERE id <= 10 ORDER BY id")
    path = tmp_path / "big.xlsx"
    with pytest.raises(ValidationError, match=r"11 rows; an Excel sheet holds at most 10 .*CSV"):
        items_store.export_file(eleven, path, "tester", format="xlsx")
    assert not path.exists()
    assert list(tmp_path.glob("*.part")) == []
    assert items_store.audit_log(action="EXPORT") == []

    assert items_store.export_file(ten, path, "tester", format="xlsx") == 10
    assert read_xlsx(path)[1] == [[i] for i in range(1, 11)]
    # CSV and Parquet have no such limit.
    assert items_store.export_file(eleven, tmp_path / "big.parquet", "t", format="parquet") == 11


def test_xlsx_refuses_rows_past_the_limit_while_streaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a known row count the writer counts, and refuses at the first row too many."""
    monkeypatch.setattr(exports, "XLSX_MAX_DATA_ROWS", 5)
    chunks = iter([[[1], [2], [3]], [[4], [5], [6]]])
    path = tmp_path / "stream.xlsx"
    path.write_bytes(b"an earlier file")
    with pytest.raises(ValidationError, match="6 rows"):
        exports.write_xlsx([Column(name="n", type="int")], chunks, path)
    assert path.read_bytes() == b"an earlier file"  # left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.xlsx"]


def test_xlsx_refuses_text_longer_than_a_cell(tmp_path: Path) -> None:
    long = "x" * (exports.XLSX_MAX_CELL_CHARS + 1)
    columns = [Column(name="id", type="int"), Column(name="note", type="str")]
    with pytest.raises(ValidationError, match=r"Row 2, column 'note' holds 32,768 characters"):
        exports.write_xlsx(columns, [[[1, "ok"], [2, long]]], tmp_path / "long.xlsx")
    assert list(tmp_path.iterdir()) == []
    exact = "y" * exports.XLSX_MAX_CELL_CHARS
    exports.write_xlsx(columns, [[[1, exact]]], tmp_path / "fits.xlsx")
    assert read_xlsx(tmp_path / "fits.xlsx")[1] == [[1, exact]]


# -- Parquet ---------------------------------------------------------------------------------


def test_parquet_round_trip_equals_the_query_exactly(
    items_store: KPIStore, items_db: Path, tmp_path: Path
) -> None:
    execution_id = run_query(items_store, ITEMS_SQL)
    path = tmp_path / "items.parquet"

    count = items_store.export_file(execution_id, path, "tester", format="parquet")

    table = pq.read_table(path)
    assert count == table.num_rows == ITEMS
    assert table.schema.names == ["id", "label", "price", "qty", "day", "note"]
    assert table.schema.types == [
        pa.int64(),
        pa.string(),
        pa.float64(),
        pa.int64(),
        pa.string(),
        pa.string(),
    ]
    expected = direct(items_db, ITEMS_SQL)
    assert [list(row.values()) for row in table.to_pylist()] == expected  # floats exactly
    assert table.column("qty").null_count == ITEMS // 13


def test_parquet_to_a_binary_file_equals_the_file_on_disk(
    items_store: KPIStore, tmp_path: Path
) -> None:
    execution_id = run_query(items_store, ITEMS_SQL)
    buffer = io.BytesIO()
    path = tmp_path / "items.parquet"
    assert items_store.export_file(execution_id, buffer, "t", format="parquet") == ITEMS
    assert items_store.export_file(execution_id, path, "t", format="parquet") == ITEMS
    assert not buffer.closed
    assert pq.read_table(io.BytesIO(buffer.getvalue())).equals(pq.read_table(path))

    xlsx = io.BytesIO()
    assert items_store.export_file(execution_id, xlsx, "t", format="xlsx") == ITEMS
    assert items_store.export_file(execution_id, tmp_path / "i.xlsx", "t", format="xlsx") == ITEMS
    assert read_xlsx(xlsx.getvalue()) == read_xlsx(tmp_path / "i.xlsx")
    with pytest.raises(ValidationError, match="binary file"):
        items_store.export_file(execution_id, io.StringIO(), "t", format="xlsx")


def test_parquet_writes_row_groups_as_chunks_come(
    store: KPIStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kpi_store import results

    monkeypatch.setattr(results, "EXPORT_CHUNK_ROWS", 100)
    monkeypatch.setattr(exports, "PARQUET_ROW_GROUP_ROWS", 300)
    execution_id = run_query(
        store,
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1234) "
        "SELECT x, 'row ' || x AS label FROM n",
        source="shop",
    )
    path = tmp_path / "many.parquet"
    assert store.export_file(execution_id, path, "tester", format="parquet") == 1234
    parquet = pq.ParquetFile(path)
    assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)] == [
        300,
        300,
        300,
        300,
        34,
    ]
    assert parquet.read().to_pylist() == [{"x": x, "label": f"row {x}"} for x in range(1, 1235)]
    xlsx = tmp_path / "many.xlsx"
    assert store.export_file(execution_id, xlsx, "tester", format="xlsx") == 1234
    assert read_xlsx(xlsx)[1] == [[x, f"row {x}"] for x in range(1, 1235)]


def test_parquet_refuses_a_value_its_column_type_cannot_hold(
    items_store: KPIStore, tmp_path: Path
) -> None:
    """SQLite lets a column mix types; the run records a column's type from its first
    value. Parquet refuses rather than round, cast or drop; XLSX and CSV keep each value."""
    mixed = run_query(
        items_store,
        "SELECT column1 AS q, column2 AS t FROM (VALUES (1, 'a'), (2.0, 5), (2.5, 'c'), "
        "('n/a', NULL))",
    )
    path = tmp_path / "mixed.parquet"
    path.write_bytes(b"an earlier export")
    with pytest.raises(ValidationError) as refused:
        items_store.export_file(mixed, path, "tester", format="parquet")
    message = str(refused.value)
    assert "Row 3 of column 'q' holds 2.5" in message and "(int," in message
    assert "CSV or XLSX" in message
    assert items_store.engine.pool.checkedout() == 0  # the rows read so far hold no connection
    assert path.read_bytes() == b"an earlier export"
    assert list(tmp_path.glob(".*.part")) == []
    assert items_store.audit_log(action="EXPORT") == []

    buffer = io.BytesIO()
    with pytest.raises(ValidationError):
        items_store.export_file(mixed, buffer, "tester", format="parquet")
    assert buffer.getvalue() == b""  # nothing half written into the caller's file

    xlsx = tmp_path / "mixed.xlsx"
    assert items_store.export_file(mixed, xlsx, "tester", format="xlsx") == 4
    assert read_xlsx(xlsx)[1] == [[1, "a"], [2, 5], [2.5, "c"], ["n/a", None]]

    # Whole floats in an int column fit; a text column takes any value, as its text.
    fits = run_query(
        items_store, "SELECT column1 AS q, column2 AS t FROM (VALUES (1, 'a'), (2.0, 5))"
    )
    assert items_store.export_file(fits, path, "tester", format="parquet") == 2
    assert pq.read_table(path).to_pylist() == [{"q": 1, "t": "a"}, {"q": 2, "t": "5"}]


def test_parquet_names_the_first_value_that_does_not_fit(tmp_path: Path) -> None:
    columns = [Column(name="x", type="float"), Column(name="n", type="int")]
    chunks = [[[1.5, 1], [2.5, 2]], [[3.5, 3], ["3,5", 4]]]
    with pytest.raises(ValidationError, match=r"Row 4 of column 'x' holds '3,5'.*\(float,"):
        exports.write_parquet(columns, iter(chunks), tmp_path / "x.parquet")
    with pytest.raises(ValidationError, match=r"Row 2 of column 'n' holds 9007199254740993"):
        exports.write_parquet(  # an int a float column cannot hold exactly
            [Column(name="n", type="float")], [[[1.0], [2**53 + 1]]], tmp_path / "n.parquet"
        )
    with pytest.raises(ValidationError, match=r"Row 1 of column 'b' holds 1,"):
        exports.write_parquet([Column(name="b", type="bool")], [[[1]]], tmp_path / "b.parquet")
    assert list(tmp_path.iterdir()) == []


def test_an_export_over_an_earlier_file_keeps_its_permissions_and_links(tmp_path: Path) -> None:
    columns = [Column(name="n", type="int")]
    private = tmp_path / "private.xlsx"
    private.write_bytes(b"old")
    private.chmod(0o600)
    link = tmp_path / "latest.parquet"
    target = tmp_path / "data" / "2024.parquet"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link.symlink_to(target)

    assert exports.write_xlsx(columns, [[[1]]], private) == 1
    assert exports.write_parquet(columns, [[[1]]], link) == 1

    assert private.stat().st_mode & 0o777 == 0o600
    assert read_xlsx(private)[1] == [[1]]
    assert link.is_symlink() and pq.read_table(link).to_pylist() == [{"n": 1}]
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "2024.parquet",
        "data",
        "latest.parquet",
        "private.xlsx",
    ]


def test_an_empty_result_and_duplicate_names(items_store: KPIStore, tmp_path: Path) -> None:
    empty = run_query(items_store, "SELECT id, label FROM items WHERE id < 0")
    assert items_store.export_file(empty, tmp_path / "e.parquet", "t", format="parquet") == 0
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0
    assert items_store.export_file(empty, tmp_path / "e.xlsx", "t", format="xlsx") == 0
    assert read_xlsx(tmp_path / "e.xlsx") == (["id", "label"], [])

    twice = run_query(items_store, "SELECT id AS a, label AS a, qty AS a_2 FROM items LIMIT 1")
    items_store.export_file(twice, tmp_path / "d.parquet", "t", format="parquet")
    table = pq.read_table(tmp_path / "d.parquet")
    assert table.schema.names == ["a", "a_2", "a_2_2"]
    recorded = json.loads(table.schema.metadata[b"kpi_store.columns"])
    assert [c["name"] for c in recorded] == ["a", "a", "a_2"]
    items_store.export_file(twice, tmp_path / "d.xlsx", "t", format="xlsx")
    assert read_xlsx(tmp_path / "d.xlsx")[0] == ["a", "a", "a_2"]


# -- the store's side: formats, audit, refusals ----------------------------------------------


def test_each_export_is_audited_with_its_format(items_store: KPIStore, tmp_path: Path) -> None:
    execution_id = run_query(items_store, ITEMS_SQL)
    for kind in ("xlsx", "parquet", "csv"):
        items_store.export_file(execution_id, tmp_path / f"a.{kind}", "dora", format=kind)
    items_store.export_file(execution_id, tmp_path / "b.csv", "dora", excel=True)

    entries = items_store.audit_log(action="EXPORT")
    kpi_id = items_store.execution(execution_id).kpi_id
    assert {(e.actor, e.kpi_id, e.entity) for e in entries} == {
        ("dora", kpi_id, f"execution:{execution_id}")
    }
    base = {"execution_id": execution_id, "rows": ITEMS}
    assert sorted((e.details for e in entries), key=lambda d: (d["format"], d.get("excel", 0))) == [
        {**base, "format": "csv", "excel": False},
        {**base, "format": "csv", "excel": True},
        {**base, "format": "parquet"},
        {**base, "format": "xlsx"},
    ]
    assert (tmp_path / "b.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert items_store.verify_audit().ok


def test_unknown_formats_and_failed_runs_are_refused_clearly(
    items_store: KPIStore, tmp_path: Path
) -> None:
    execution_id = run_query(items_store, ITEMS_SQL)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValidationError, match="'xls'.*csv, xlsx, parquet"):
        items_store.export_file(execution_id, out / "a.xls", "t", format="xls")
    kpi = items_store.create_kpi(
        {"name": "Broken", "data_source": "items", "sql": "SELECT x FROM gone"}, "t"
    )
    failed = items_store.execute(kpi.id, actor="t")
    for kind in ("xlsx", "parquet"):
        with pytest.raises(ExecutionError, match="failed"):
            items_store.export_file(failed.id, out / f"f.{kind}", "t", format=kind)
    with pytest.raises(ValidationError, match="Cannot write the Parquet file"):
        items_store.export_file(execution_id, out / "no" / "a.parquet", "t", format="parquet")
    assert list(out.iterdir()) == []
    assert items_store.audit_log(action="EXPORT") == []


# -- the command line ------------------------------------------------------------------------


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kpi_store", "--store", url, *args]
    env = {k: v for k, v in os.environ.items() if k != "KPI_STORE_URL"}
    env["KPI_ACTOR"] = "cli-tester"
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_the_cli_exports_xlsx_and_parquet(
    items_store: KPIStore,
    store_url: str,
    items_db: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    execution_id = str(run_query(items_store, ITEMS_SQL))
    expected = direct(items_db, ITEMS_SQL)

    by_extension = cli(store_url, "export", execution_id, "-o", str(tmp_path / "out.xlsx"))
    assert by_extension.returncode == 0, by_extension.stderr
    assert by_extension.stdout.strip() == (
        f"Wrote {ITEMS} row(s) of run {execution_id} to {tmp_path / 'out.xlsx'} (xlsx)"
    )
    excel = [[as_excel_number(v) for v in row] for row in expected]
    assert read_xlsx(tmp_path / "out.xlsx")[1] == excel

    named = cli(
        store_url, "export", execution_id, "-o", str(tmp_path / "o.pq"), "--format", "parquet"
    )
    assert named.returncode == 0 and "(parquet)" in named.stdout, named.stderr
    assert [list(r.values()) for r in pq.read_table(tmp_path / "o.pq").to_pylist()] == expected

    # The same code in this process: the extension decides, else CSV; --excel is CSV's.
    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--store", store_url, "--actor", "cli-tester", "export", *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, _ = run(execution_id, "-o", str(tmp_path / "out.PARQUET"))
    assert code == 0 and "(parquet)" in out
    code, out, _ = run(execution_id, "-o", str(tmp_path / "out.txt"))
    assert code == 0 and "(csv)" in out
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").startswith("id,label,price")
    code, _, err = run(execution_id, "-o", str(tmp_path / "x.xlsx"), "--excel")
    assert code == 2 and "--excel applies to CSV only" in err
    code, _, err = run(execution_id, "-o", "x", "--format", "xls")
    assert code == 2 and "invalid choice: 'xls'" in err
    assert not (tmp_path / "x.xlsx").exists()

    entries = items_store.audit_log(action="EXPORT")
    assert sorted(e.details["format"] for e in entries) == ["csv", "parquet", "parquet", "xlsx"]
    assert {e.actor for e in entries} == {"cli-tester"}


# -- memory and speed ------------------------------------------------------------------------

MEMORY_ROWS = 200_000
_MEASURE = """
import json, resource, sys, time
import pyarrow, pyarrow.parquet, xlsxwriter
from kpi_store import KPIStore

def peaks():
    # ru_maxrss (KiB on Linux), and VmHWM: the peak of this process image alone.
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    hwm = int(status["VmHWM"].split()[0])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, hwm / 1024

url, small, big, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
report = {}
with KPIStore(url) as store:
    for kind in ("xlsx", "parquet"):  # once small: libraries load, pools warm up
        store.export_file(small, f"{folder}/warm.{kind}", "m", format=kind)
    for kind in ("xlsx", "parquet"):
        before, started = peaks(), time.perf_counter()
        rows = store.export_file(big, f"{folder}/big.{kind}", "m", format=kind)
        seconds = time.perf_counter() - started
        after = peaks()
        report[kind] = {
            "rows": rows,
            "seconds": round(seconds, 2),
            "peak_mb": round(after[0], 1),
            "growth_mb": round(after[0] - before[0], 1),
            "hwm_growth_mb": round(after[1] - before[1], 1),
        }
print(json.dumps(report))
"""


@pytest.mark.sqlite_only
def test_exports_hold_one_chunk_not_the_result(
    store: KPIStore, store_url: str, tmp_path: Path
) -> None:
    """200,000 rows of ~200 bytes exported in a fresh process: held whole they would take
    ~65 MB as Python rows (more again as a sheet or an Arrow table); the peak grows by a
    bounded few MB (XLSX) or a few tens of MB (Parquet: a 20,000-row group, and what
    pyarrow's allocator keeps for reuse) however many rows there are."""
    big = run_query(
        store,
        f"WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {MEMORY_ROWS}) "
        "SELECT x, printf('%0200d', x) AS label FROM n",
        source="shop",
    )
    small = run_query(store, "SELECT 1 AS x, 'a' AS label", source="shop")
    whole_mb = MEMORY_ROWS * sum(map(sys.getsizeof, [[1, ""], 10**6, "0" * 200])) / 2**20
    assert whole_mb > 60
    script = tmp_path / "measure.py"
    script.write_text(_MEASURE, encoding="utf-8")
    arguments = [str(script), store_url, str(small), str(big), str(tmp_path)]
    # Started by sh, not directly: Linux keeps ru_maxrss across execve, so a direct child
    # of this (large) pytest process would start at its peak; a child of sh starts fresh.
    result = subprocess.run(
        ["/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, *arguments],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["xlsx"]["rows"] == report["parquet"]["rows"] == MEMORY_ROWS
    assert report["xlsx"]["growth_mb"] < 20 and report["xlsx"]["hwm_growth_mb"] < 20, report
    assert report["parquet"]["growth_mb"] < 50 and report["parquet"]["hwm_growth_mb"] < 50, report
    assert pq.read_metadata(tmp_path / "big.parquet").num_rows == MEMORY_ROWS
