"""Stored result rows: bulk writes while a query streams, pages by row number, CSV export.

Rows live in ``kpi_execution_result_rows`` as JSON arrays in column order, keyed by
(execution_id, row_number); the column list is kept once on the execution. A page is a
row-number range, so the last page of a million rows costs what the first does, and
the total comes from the execution's ``row_count`` rather than a COUNT per page.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import repeat
from typing import IO, TYPE_CHECKING, Any, cast

import orjson
import sqlalchemy as sa

from . import db, result_views
from .errors import ExecutionError, RowsRemovedError, ValidationError
from .models import Column, Execution, ResultPage
from .result_views import View, ViewSpec
from .schema import kpi_execution_result_rows as rows_table

if TYPE_CHECKING:
    import pandas as pd

MAX_PAGE_SIZE = 1_000
EXPORT_CHUNK_ROWS = 5_000
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# JSON values the csv module would not write as we want (None it writes as "" already).
_NEEDS_CONVERSION = frozenset({bool, dict, list})
_SQLITE_RANGE = (
    "SELECT row_data FROM kpi_execution_result_rows "
    "WHERE execution_id = ? AND row_number BETWEEN ? AND ? ORDER BY row_number"
)


def insert_rows(
    connection: sa.engine.Connection, execution_id: int, first_row: int, encoded: list[str]
) -> None:
    """Insert pre-encoded rows numbered from ``first_row`` in one round of executemany."""
    numbers = range(first_row, first_row + len(encoded))
    if connection.dialect.name == "postgresql":
        raw = db.driver(connection)
        with (
            raw.cursor() as cursor,
            cursor.copy(
                "COPY kpi_execution_result_rows (execution_id, row_number, row_data) FROM STDIN"
            ) as copy,
        ):
            for number, data in zip(numbers, encoded, strict=True):
                copy.write_row((execution_id, number, data))
        return
    if connection.dialect.name == "sqlite":
        # The driver directly, inside the transaction SQLAlchemy began, fed by a generator:
        # no list of 20,000 parameter tuples (which also kept the cyclic GC busy).
        db.driver(connection).executemany(
            "INSERT INTO kpi_execution_result_rows (execution_id, row_number, row_data) "
            "VALUES (?, ?, ?)",
            zip(repeat(execution_id), numbers, encoded),
        )
        return
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    connection.exec_driver_sql(
        "INSERT INTO kpi_execution_result_rows (execution_id, row_number, row_data) "
        f"VALUES ({marker}, {marker}, {marker})",
        list(zip(repeat(execution_id), numbers, encoded)),
    )


def delete_rows(connection: sa.engine.Connection, execution_id: int) -> None:
    connection.execute(rows_table.delete().where(rows_table.c.execution_id == execution_id))


def _stored_rows(
    connection: sa.engine.Connection, execution_id: int, first: int, last: int
) -> list[list[Any]]:
    loads = orjson.loads
    return [loads(data) for data in _stored_json(connection, execution_id, first, last)]


def _stored_json(
    connection: sa.engine.Connection, execution_id: int, first: int, last: int
) -> list[str]:
    if connection.dialect.name == "sqlite":
        # The driver directly: a fetchall of one text column, without a result object
        # per row (a third of an export's time went there).
        cursor = db.driver(connection).execute(_SQLITE_RANGE, (execution_id, first, last))
        return [data for (data,) in cursor.fetchall()]
    query = (
        sa.select(rows_table.c.row_data)
        .where(
            rows_table.c.execution_id == execution_id,
            rows_table.c.row_number.between(first, last),
        )
        .order_by(rows_table.c.row_number)
    )
    return list(connection.execute(query).scalars())


def _json_chunks(
    engine: sa.engine.Engine, execution: Execution, view: View | None = None
) -> Iterator[list[str]]:
    """Every row as its stored JSON text, a few thousand at a time. Writers decode each
    row just before writing it, so no chunk of decoded rows (thousands of lists the
    cyclic garbage collector would keep walking) is ever alive at once."""
    _require_success(execution)
    total = (execution.row_count or 0) if view is None else view.total
    for first in range(1, total + 1, EXPORT_CHUNK_ROWS):
        last = first + EXPORT_CHUNK_ROWS - 1
        # Read in a short transaction of its own, closed before the chunk is handed on:
        # a download that stops half way holds no connection.
        with db.read_tx(engine) as connection:
            if view is None:
                chunk = _stored_json(connection, execution.id, first, last)
            else:
                chunk = result_views.rows_json(connection, execution.id, view, first, last)
        yield chunk


def _csv_rows(chunk: list[str], excel: bool) -> Iterator[list[Any]]:
    """The rows of a chunk, decoded one at a time, cells converted only where needed."""
    if not excel and _plain_json(chunk):
        return map(orjson.loads, chunk)  # no booleans, objects or nested arrays: as decoded
    return _converted_rows(chunk, excel)


def _plain_json(chunk: list[str]) -> bool:
    """Whether no row of the chunk can hold a value the csv module would write unlike our
    export (booleans, objects, arrays): a few scans of the text, in C."""
    text = "".join(chunk)  # a mark inside a string only sends the chunk the slow way
    return not any(mark in text for mark in ("true", "false", "{", "[[", ",["))


def _converted_rows(chunk: list[str], excel: bool) -> Iterator[list[Any]]:
    loads, plain = orjson.loads, _NEEDS_CONVERSION.isdisjoint
    for data in chunk:
        row = loads(data)
        yield row if not excel and plain(map(type, row)) else [_csv_cell(v, excel) for v in row]


def complete(page: ResultPage) -> bool:
    """Whether a page holds every row its position in the total says it should."""
    expected = min(page.page_size, page.total - (page.page - 1) * page.page_size)
    return len(page.rows) >= max(expected, 0)


def _rows(
    connection: sa.engine.Connection, execution_id: int, view: View | None, first: int, last: int
) -> list[list[Any]]:
    """Rows ``first``..``last`` of the run in its own order, or positions of a view."""
    if view is None:
        return _stored_rows(connection, execution_id, first, last)
    return result_views.rows(connection, execution_id, view, first, last)


def _require_success(execution: Execution) -> None:
    if execution.rows_pruned_at is not None:
        raise RowsRemovedError(execution.id, execution.rows_pruned_at)
    if execution.status != "success":
        raise ExecutionError(
            f"Run {execution.id} has no stored rows: its status is {execution.status}."
        )


def page(
    connection: sa.engine.Connection,
    execution: Execution,
    page_number: int,
    page_size: int,
    view: View | None = None,
    unkept: ViewSpec | None = None,
) -> ResultPage:
    """One page of the run's rows, of one of its kept sorted or filtered views, or of a
    sort-only view not kept yet (``unkept``: sorted on the spot)."""
    _require_success(execution)
    if not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValidationError(
            f"Page size must be a whole number from 1 to {MAX_PAGE_SIZE}; got {page_size!r}.",
            {"page_size": f"1 to {MAX_PAGE_SIZE}"},
        )
    total = (execution.row_count or 0) if view is None else view.total
    total_pages = max(1, -(-total // page_size))
    if not isinstance(page_number, int) or not 1 <= page_number <= total_pages:
        raise ValidationError(
            f"Page {page_number!r} does not exist: run {execution.id} has {total_pages} "
            f"page(s) of {page_size} rows.",
            {"page": f"1 to {total_pages}"},
        )
    first = (page_number - 1) * page_size + 1
    last = min(first + page_size - 1, total)
    if unkept is not None:
        rows = result_views.first_rows(connection, execution, unkept, first, last)
    else:
        rows = _rows(connection, execution.id, view, first, last)
    return ResultPage(
        execution_id=execution.id,
        total=total,
        page=page_number,
        page_size=page_size,
        total_pages=total_pages,
        columns=execution.columns,
        rows=rows,
    )


_PANDAS_TYPES = {
    "int": "Int64",
    "float": "Float64",
    "bool": "boolean",
    "str": "string",
}


def frame(result: ResultPage) -> pd.DataFrame:
    """A page as a DataFrame with nullable dtypes that match the column types."""
    import pandas as pd  # only the dashboard needs frames; the CLI starts faster without it

    names = [c.name for c in result.columns]
    data = pd.DataFrame(result.rows, columns=result_views.unique_names(names))
    for column, name in zip(result.columns, data.columns, strict=True):
        try:
            if column.type in _PANDAS_TYPES:
                data[name] = data[name].astype(_PANDAS_TYPES[column.type])
            elif column.type in ("date", "datetime"):
                data[name] = pd.to_datetime(data[name], errors="coerce")
            elif column.type == "decimal":
                data[name] = pd.to_numeric(data[name], errors="coerce")
        except (TypeError, ValueError):
            # SQLite lets one column mix types (1, 2.5, 'n/a'): show it as it is.
            data[name] = data[name].astype(object)
    return data


def row_chunks(
    engine: sa.engine.Engine, execution: Execution, view: View | None = None
) -> Iterator[list[list[Any]]]:
    """Every stored row (of the run, or of a view) in order, as lists of at most
    ``EXPORT_CHUNK_ROWS`` rows, for writers that take a batch at once."""
    loads = orjson.loads
    for chunk in _json_chunks(engine, execution, view):
        yield [loads(data) for data in chunk]


def _csv_cell(value: Any, excel: bool) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    if excel and isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        # A text cell a spreadsheet would run as a formula (OWASP CSV injection).
        return "'" + value
    return value


def write_csv(
    engine: sa.engine.Engine,
    execution: Execution,
    dest: str | os.PathLike[str] | IO[str] | IO[bytes],
    excel: bool = False,
    view: View | None = None,
) -> int:
    """Stream every row (of the run, or of a view) as RFC 4180 CSV (UTF-8; with a BOM
    when ``excel``)."""
    _require_success(execution)
    with csv_destination(dest) as handle:
        return _write_csv_text(engine, execution, handle, excel, view)


@contextmanager
def csv_destination(dest: str | os.PathLike[str] | IO[str] | IO[bytes]) -> Iterator[IO[str]]:
    """A text handle for writing CSV to ``dest``: a path opened (refused plainly when it
    cannot be) and closed after, a text file as it is, a binary file wrapped and left open."""
    if isinstance(dest, (str, os.PathLike)):
        try:
            handle = open(dest, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as error:
            message = f"Cannot write the CSV file '{dest}': {error.strerror or error}."
            raise ValidationError(message, {"dest": message}) from None
        with handle:
            yield handle
        return
    if isinstance(dest, io.TextIOBase):
        yield cast(IO[str], dest)
        return
    text = io.TextIOWrapper(cast(IO[bytes], dest), encoding="utf-8", newline="")
    try:
        yield text
    finally:
        text.detach()  # the caller's file stays open


def csv_bytes(header: list[str], rows: list[list[Any]], excel: bool = False) -> bytes:
    """A small table (one page, a filtered log) as CSV bytes, quoted like the export."""
    handle = io.StringIO()
    if excel:
        handle.write("\ufeff")
    writer = csv.writer(handle, lineterminator="\r\n")
    writer.writerow([_csv_cell(name, excel) for name in header])  # names can be formulas too
    writer.writerows([_csv_cell(v, excel) for v in row] for row in rows)
    return handle.getvalue().encode("utf-8")


def _write_csv_text(
    engine: sa.engine.Engine,
    execution: Execution,
    handle: IO[str],
    excel: bool,
    view: View | None = None,
) -> int:
    if excel:
        handle.write("\ufeff")
    writer = csv.writer(handle, lineterminator="\r\n")
    writer.writerow([_csv_cell(c.name, excel) for c in execution.columns])
    count = 0
    for chunk in _json_chunks(engine, execution, view):
        writer.writerows(_csv_rows(chunk, excel))
        count += len(chunk)
    handle.flush()
    return count


def column_types(columns: list[Column]) -> dict[str, str]:
    return {c.name: c.type for c in columns}


def csv_chunks(
    engine: sa.engine.Engine, execution: Execution, excel: bool = False, view: View | None = None
) -> Iterator[str]:
    """Every row as CSV text, one chunk of at most ``EXPORT_CHUNK_ROWS`` rows at a time.

    The same cells, quoting and header as :func:`write_csv`, for a destination that pulls
    (an HTTP response streaming a download): only one chunk is ever held in memory.
    """
    _require_success(execution)
    handle = io.StringIO()
    writer = csv.writer(handle, lineterminator="\r\n")
    if excel:
        handle.write("\ufeff")
    writer.writerow([_csv_cell(c.name, excel) for c in execution.columns])
    for chunk in _json_chunks(engine, execution, view):
        writer.writerows(_csv_rows(chunk, excel))
        yield handle.getvalue()
        handle.seek(0)
        handle.truncate()
    if handle.tell():
        yield handle.getvalue()


def check_exportable(execution: Execution) -> None:
    """Raise ExecutionError unless the run succeeded (only successful runs keep rows)."""
    _require_success(execution)
