"""Two runs compared row by row: rows only in A, only in B, changed, unchanged.

Rows are matched by the values of the ``key`` columns (matched by name between the runs).
Both runs' stored rows are read in key order, each by one SQL query that sorts them in
the database (``ORDER BY`` the key as JSON text: ``json_array(json_extract(…))`` on
SQLite, ``jsonb_build_array(… -> i)::text COLLATE "C"`` on PostgreSQL, so both sort by
code point as Python compares strings), and the two ordered streams are merged here a
few thousand rows at a time: memory does not grow with the runs. Two rows with the same
key next to each other in one stream is a duplicate key, refused naming the value.

A key is a value like any other: JSON ``null`` keys match each other, and two of them in
one run are duplicates. Values are compared as the stored JSON values: numbers by value
(``1`` equals ``1.0``), everything else by type and value (the text ``"1"`` is not the
number ``1``). A column only one run has differs for every row the runs share. When the
two runs have the same columns in the same order, rows whose stored JSON text is equal
are unchanged without being decoded.

Nothing is kept: a summary (``summarize``), a page of one category (``page``) and the
CSV export (``write_csv``) each make one pass over both runs. On SQLite that is about
4 s for two runs of a million rows (see docs/PERFORMANCE.md).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import IO, Any

import orjson
import sqlalchemy as sa

from . import db
from .errors import KPIStoreError, ValidationError
from .models import (
    DIFF_CATEGORIES,
    ColumnMatch,
    DiffPage,
    DiffRow,
    Execution,
    RunDiff,
    SettingDifference,
)
from .result_views import unique_names
from .results import _csv_cell, check_exportable, csv_destination

FETCH_ROWS = 5_000
MAX_KEY_COLUMNS = 10
MAX_PAGE_SIZE = 1_000
CSV_HEADER = ["category", "column", "value_a", "value_b"]

# (key as JSON text, row number, row as stored JSON text)
Stored = tuple[str, int, str]


class DuplicateKeyError(KPIStoreError):
    """The key does not identify one row of a run: two rows share the value."""

    def __init__(self, message: str, run: int, key: list[Any]):
        super().__init__(message)
        self.run = run
        self.key = key


@dataclass(frozen=True)
class Layout:
    """The columns of the two runs, matched by name (``unique_names``: a, a_2)."""

    names_a: list[str]
    names_b: list[str]
    key: list[str]
    shared: list[tuple[str, int, int]]  # (name, index in A, index in B), A's order
    only_a: list[str]
    only_b: list[str]

    @property
    def same(self) -> bool:
        """Same columns in the same order: equal JSON text is an unchanged row."""
        return self.names_a == self.names_b

    @property
    def differing_always(self) -> list[str]:
        return self.only_a + self.only_b


def layout(a: Execution, b: Execution, key: Sequence[str] | str) -> Layout:
    """Check that both runs can be compared on ``key`` and match their columns."""
    check_exportable(a)
    check_exportable(b)
    wanted = [key] if isinstance(key, str) else list(key)
    if not wanted:
        raise ValidationError("Name at least one key column to match rows by.", {"key": ""})
    if len(wanted) > MAX_KEY_COLUMNS:
        raise ValidationError(f"A key has at most {MAX_KEY_COLUMNS} columns; got {len(wanted)}.")
    if len(set(wanted)) != len(wanted):
        raise ValidationError("A key column is named twice.", {"key": ", ".join(wanted)})
    names_a = unique_names([c.name for c in a.columns])
    names_b = unique_names([c.name for c in b.columns])
    for run, names in ((a, names_a), (b, names_b)):
        missing = [k for k in wanted if k not in names]
        if missing:
            listed = ", ".join(names)
            raise ValidationError(
                f"Run {run.id} has no column {missing[0]!r}; its columns are: {listed}.",
                {"key": listed},
            )
    in_b = {name: i for i, name in enumerate(names_b)}
    shared = [(n, i, in_b[n]) for i, n in enumerate(names_a) if n in in_b]
    only_a = [n for n in names_a if n not in in_b]
    only_b = [n for n in names_b if n not in set(names_a)]
    return Layout(names_a, names_b, wanted, shared, only_a, only_b)


def settings(a: Execution, b: Execution) -> list[SettingDifference]:
    """What the runs were run with that differs: KPI, its version, parameter values."""
    found: list[SettingDifference] = []
    if a.kpi_id != b.kpi_id:
        found.append(SettingDifference(what="kpi", a=a.kpi_id, b=b.kpi_id))
    if a.kpi_id != b.kpi_id or a.kpi_version != b.kpi_version:
        found.append(SettingDifference(what="kpi_version", a=a.kpi_version, b=b.kpi_version))
    for name in dict.fromkeys([*a.params, *b.params]):
        x, y = a.params.get(name), b.params.get(name)
        if (name in a.params) != (name in b.params) or not _same(x, y):
            found.append(SettingDifference(what="parameter", name=name, a=x, b=y))
    return found


# -- reading both runs in key order ------------------------------------------------------------


def _ordered_sql(dialect: str, indexes: Sequence[int]) -> str:
    if dialect == "postgresql":
        items = ", ".join(f"(row_data::jsonb) -> {i}" for i in indexes)
        key = f'(jsonb_build_array({items})::text) COLLATE "C"'
        marker = "%(run)s"
    else:
        items = ", ".join(f"json_extract(row_data, '$[{i}]')" for i in indexes)
        key = f"json_array({items})"
        marker = ":run"
    return (
        f"SELECT {key} AS k, row_number, row_data FROM kpi_execution_result_rows "
        f"WHERE execution_id = {marker} ORDER BY k, row_number"
    )


def _stream(
    connection: sa.engine.Connection, execution_id: int, indexes: list[int]
) -> Generator[Stored, None, None]:
    """Every row of a run as (key text, row number, row JSON), in key order, fetched a
    few thousand at a time (a server-side cursor on PostgreSQL)."""
    sql = _ordered_sql(connection.dialect.name, indexes)
    if connection.dialect.name == "sqlite":
        cursor = db.driver(connection).cursor()
        try:
            cursor.execute(sql, {"run": execution_id})
            while chunk := cursor.fetchmany(FETCH_ROWS):
                yield from chunk
        finally:
            cursor.close()
        return
    result = connection.execution_options(stream_results=True, yield_per=FETCH_ROWS).execute(
        sa.text(sql.replace("%(run)s", ":run")), {"run": execution_id}
    )
    try:
        for partition in result.partitions():
            yield from (tuple(row) for row in partition)  # type: ignore[misc]
    finally:
        result.close()


def _unique(rows: Iterator[Stored], run: int, key: list[str]) -> Generator[Stored, None, None]:
    """The rows, refusing a key that two of them share (they come in key order)."""
    previous = None
    for row in rows:
        if row[0] == previous:
            value = orjson.loads(row[0])
            shown = ", ".join(f"{k}={v!r}" for k, v in zip(key, value, strict=False))
            raise DuplicateKeyError(
                f"The key ({', '.join(key)}) is not unique in run {run}: "
                f"more than one row has {shown}. Choose columns that identify one row.",
                run,
                value,
            )
        previous = row[0]
        yield row


_END = ("", 0, "")


def merged(
    connection: sa.engine.Connection, a: Execution, b: Execution, shape: Layout
) -> Generator[tuple[str, Stored | None, Stored | None], None, None]:
    """Every key of either run in key order: ("only_in_a", row, None), ("only_in_b",
    None, row) or ("both", row_a, row_b)."""
    streams = [
        _stream(connection, run.id, [names.index(k) for k in shape.key])
        for run, names in ((a, shape.names_a), (b, shape.names_b))
    ]
    left = _unique(streams[0], a.id, shape.key)
    right = _unique(streams[1], b.id, shape.key)
    try:
        x = next(left, None)
        y = next(right, None)
        while x is not None and y is not None:
            if x[0] == y[0]:
                yield "both", x, y
                x = next(left, None)
                y = next(right, None)
            elif x[0] < y[0]:
                yield "only_in_a", x, None
                x = next(left, None)
            else:
                yield "only_in_b", None, y
                y = next(right, None)
        while x is not None:
            yield "only_in_a", x, None
            x = next(left, None)
        while y is not None:
            yield "only_in_b", None, y
            y = next(right, None)
    finally:  # also when a duplicate key was refused: no cursor outlives its connection
        for stream in (left, right, *streams):
            stream.close()


def _same(x: Any, y: Any) -> bool:
    if type(x) is type(y):
        return bool(x == y)
    numbers = (int, float)
    return (
        isinstance(x, numbers)
        and isinstance(y, numbers)
        and not isinstance(x, bool)
        and not isinstance(y, bool)
        and x == y
    )


def _differing(shape: Layout, row_a: list[Any], row_b: list[Any]) -> list[str]:
    differ = [name for name, i, j in shape.shared if not _same(row_a[i], row_b[j])]
    return differ + shape.differing_always


def _compared(
    connection: sa.engine.Connection, a: Execution, b: Execution, shape: Layout
) -> Generator[tuple[str, Stored | None, Stored | None, list[str]], None, None]:
    """The merge with each shared key classified "changed" (with the differing columns)
    or "unchanged"."""
    fast = shape.same
    always = shape.differing_always
    loads = orjson.loads
    for category, x, y in merged(connection, a, b, shape):
        if category != "both":
            yield category, x, y, []
            continue
        assert x is not None and y is not None
        if fast and x[2] == y[2]:
            yield "unchanged", x, y, []
            continue
        differ = _differing(shape, loads(x[2]), loads(y[2])) if shape.shared else list(always)
        yield ("changed" if differ else "unchanged"), x, y, differ


# -- what callers get ---------------------------------------------------------------------------


def summarize(
    connection: sa.engine.Connection, a: Execution, b: Execution, shape: Layout
) -> RunDiff:
    counts = dict.fromkeys(("only_in_a", "only_in_b", "changed", "unchanged"), 0)
    mismatches = dict.fromkeys((name for name, _, _ in shape.shared), 0)
    with closing(_compared(connection, a, b, shape)) as compared:
        for category, _, _, differ in compared:
            counts[category] += 1
            for name in differ:
                if name in mismatches:
                    mismatches[name] += 1
    both = counts["changed"] + counts["unchanged"]
    columns = [
        ColumnMatch(
            column=name,
            in_a=True,
            in_b=True,
            matched=both - mismatches[name],
            percent=None if not both else round(100.0 * (both - mismatches[name]) / both, 4),
        )
        for name, _, _ in shape.shared
    ]
    columns += [
        ColumnMatch(column=n, in_a=True, in_b=False, matched=0, percent=None if not both else 0.0)
        for n in shape.only_a
    ]
    columns += [
        ColumnMatch(column=n, in_a=False, in_b=True, matched=0, percent=None if not both else 0.0)
        for n in shape.only_b
    ]
    return RunDiff(
        run_a=a.id,
        run_b=b.id,
        key=shape.key,
        rows_a=a.row_count or 0,
        rows_b=b.row_count or 0,
        columns=columns,
        columns_only_in_a=shape.only_a,
        columns_only_in_b=shape.only_b,
        settings=settings(a, b),
        **counts,
    )


def checked_category(category: str) -> str:
    if category not in DIFF_CATEGORIES:
        listed = ", ".join(DIFF_CATEGORIES)
        raise ValidationError(
            f"A diff category is one of {listed}; got {category!r}.", {"category": listed}
        )
    return category


def page(
    connection: sa.engine.Connection,
    a: Execution,
    b: Execution,
    shape: Layout,
    category: str,
    page_number: int,
    page_size: int,
) -> DiffPage:
    """Rows ``page_number`` (from 1) of one category, in key order. The pass stops once the
    page is full and one more row of the category was seen (``has_more``)."""
    checked_category(category)
    if page_number < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValidationError(
            f"Pages are numbered from 1 and hold 1 to {MAX_PAGE_SIZE} rows; "
            f"got page {page_number} of {page_size}."
        )
    skip = (page_number - 1) * page_size
    found: list[DiffRow] = []
    more = False
    with closing(_compared(connection, a, b, shape)) as compared:
        for kind, x, y, differ in compared:
            if kind != category:
                continue
            if skip:
                skip -= 1
                continue
            if len(found) == page_size:
                more = True
                break
            found.append(_row(shape, x, y, differ))
    return DiffPage(
        run_a=a.id,
        run_b=b.id,
        category=category,  # type: ignore[arg-type]
        page=page_number,
        page_size=page_size,
        rows=found,
        has_more=more,
    )


def _row(shape: Layout, x: Stored | None, y: Stored | None, differ: list[str]) -> DiffRow:
    key = orjson.loads((x or y or _END)[0])
    values_a = None if x is None else dict(zip(shape.names_a, orjson.loads(x[2]), strict=False))
    values_b = None if y is None else dict(zip(shape.names_b, orjson.loads(y[2]), strict=False))
    return DiffRow(
        key=key,
        row_a=None if x is None else x[1],
        row_b=None if y is None else y[1],
        a=values_a,
        b=values_b,
        columns=differ,
    )


def csv_lines(
    connection: sa.engine.Connection, a: Execution, b: Execution, shape: Layout
) -> Iterator[list[Any]]:
    """The differences as CSV lines: the key columns, ``category``, ``column``,
    ``value_a``, ``value_b``. A changed row gives one line per differing column; a row
    only in one run gives one line per column of that run (the other value empty)."""
    compared = _compared(connection, a, b, shape)
    for kind, x, y, differ in compared:
        if kind == "unchanged":
            continue
        row = _row(shape, x, y, differ)
        if kind == "changed":
            assert row.a is not None and row.b is not None
            for name in differ:
                yield [*row.key, kind, name, row.a.get(name), row.b.get(name)]
        elif row.a is not None:
            for name, value in row.a.items():
                yield [*row.key, kind, name, value, None]
        elif row.b is not None:
            for name, value in row.b.items():
                yield [*row.key, kind, name, None, value]


def write_csv(
    engine: sa.engine.Engine,
    a: Execution,
    b: Execution,
    shape: Layout,
    dest: str | os.PathLike[str] | IO[str] | IO[bytes],
    excel: bool = False,
) -> int:
    """Stream the differences to ``dest`` as CSV (UTF-8; a BOM and formula-safe text when
    ``excel``); returns the number of lines after the header."""
    with csv_destination(dest) as handle:
        return _write_text(engine, a, b, shape, handle, excel)


def _write_text(
    engine: sa.engine.Engine,
    a: Execution,
    b: Execution,
    shape: Layout,
    handle: IO[str],
    excel: bool,
) -> int:
    if excel:
        handle.write("\ufeff")
    writer = csv.writer(handle, lineterminator="\r\n")
    writer.writerow([_csv_cell(name, excel) for name in [*shape.key, *CSV_HEADER]])
    count = 0
    with db.read_tx(engine) as connection:
        for line in csv_lines(connection, a, b, shape):
            writer.writerow([_csv_cell(v, excel) for v in line])
            count += 1
    handle.flush()
    return count
