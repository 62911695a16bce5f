"""What a data source holds, read through its read-only engine: tables and views with their
columns and types, row counts where they are cheap, and the columns a query returns.

Both read only the catalogue, never a table's rows (a row count is the one exception, and
only where it is cheap), under a short time limit, so an editor gets an answer quickly or
a plain "the data source did not answer" instead of a hanging page.

- **SQLite** sources are walled (``sqlite_wall``: no ``PRAGMA`` may run on them), so the
  tables and views come from ``sqlite_master``, a table's columns and declared types from
  its ``CREATE TABLE`` text (parsed with sqlglot), a view's column names from an empty
  ``SELECT … LIMIT 0`` (SQLite declares no types for them). Rows are counted with
  ``count(*)`` for at most ``COUNTED_TABLES`` tables within ``COUNT_BUDGET_S`` seconds in
  all (interrupted at the deadline; the rest stay unknown). Views are never counted.
- **PostgreSQL**: SQLAlchemy's inspector over every schema but the system ones (one query
  for all columns), and ``pg_class.reltuples`` as an estimate (unknown before the first
  ``ANALYZE``).
- **DuckDB**: ``duckdb_tables()``, ``duckdb_views()``, ``duckdb_columns()`` (its
  ``pg_catalog`` is too thin for the inspector); ``estimated_size`` as the estimate.

:func:`result_columns` learns a query's columns without reading its rows: the query runs
wrapped as ``SELECT * FROM (…) LIMIT 0``, with each parameter bound to its default (or
NULL), through the same read-only preview path as "Test query".
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
import sqlglot
from pydantic import BaseModel, ConfigDict
from sqlglot.dialects.sqlite import SQLite
from sqlglot.tokens import Token, TokenType

from .errors import DataSourceError, ExecutionError, KPIStoreError
from .models import KPISpec
from .querying import preview_rows
from .values import BoundParams
from .watchdog import RunControl, RunStopped, Watchdog

SCHEMA_TIMEOUT_S = 10.0  # the whole schema read, counts included
COUNT_BUDGET_S = 2.0  # SQLite row counts, all tables together
COUNTED_TABLES = 50  # SQLite: tables beyond this many are not counted
PROBE_TIMEOUT_S = 5.0  # learning a query's columns when a KPI is saved
_SYSTEM_SCHEMAS = ("information_schema",)
_T = TypeVar("_T")


class ColumnInfo(BaseModel):
    """One column of a table or view: its name and its type as the database writes it
    ("" when the database declares none, as for SQLite views)."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str


class TableInfo(BaseModel):
    """A table or view of a data source.

    ``name`` is what a query writes (``schema.table`` outside the default schema, quoted
    where it is not a plain identifier: see ``sql_name``); ``row_count`` is None where
    counting is not cheap, ``row_count_estimated`` when it is the database's estimate.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Literal["table", "view"]
    columns: tuple[ColumnInfo, ...]
    row_count: int | None = None
    row_count_estimated: bool = False
    schema_name: str | None = None  # None: the source's default schema

    @property
    def sql_name(self) -> str:
        """The name as SQL text: quoted where needed, with its schema when not the default."""
        table = quote_name(self.name)
        return f"{quote_name(self.schema_name)}.{table}" if self.schema_name else table


def quote_name(name: str) -> str:
    """``name`` as SQL writes it: as is when it is a plain lower-case identifier, else in
    double quotes (SQLite, PostgreSQL and DuckDB all read those)."""
    plain = name.isidentifier() and name.isascii() and name == name.lower()
    return name if plain else '"' + name.replace('"', '""') + '"'


# -- running under a time limit ---------------------------------------------------------------


def within(seconds: float, work: Callable[[], _T], what: str) -> _T:
    """``work()``, or DataSourceError when it has not finished after ``seconds``.

    Connecting is not covered by a statement's deadline (an unreachable PostgreSQL host
    can keep a connect waiting for minutes), so the work runs in a thread of its own; one
    that overruns is left to end by itself and its result dropped.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=run, name="kpi-source-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise DataSourceError(f"The data source did not answer within {seconds:g} s ({what}).")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# -- the schema ---------------------------------------------------------------------------------


def read_schema(engine: sa.engine.Engine, timeout_s: float = SCHEMA_TIMEOUT_S) -> list[TableInfo]:
    """Every table and view of the source behind ``engine`` (a read-only engine), by name."""
    readers = {"sqlite": _sqlite_schema, "postgresql": _postgres_schema, "duckdb": _duckdb_schema}
    reader = readers.get(engine.dialect.name)
    if reader is None:
        raise DataSourceError(f"Cannot list the tables of a {engine.dialect.name} data source.")

    def read() -> list[TableInfo]:
        with engine.connect() as connection:
            try:
                return reader(connection)
            finally:
                connection.rollback()

    try:
        tables = within(timeout_s, read, "listing its tables")
    except (sa.exc.DBAPIError, sqlite3.Error) as error:
        raise DataSourceError(f"Could not list the tables: {_reason(error)}") from None
    return sorted(tables, key=lambda t: (t.schema_name or "", t.name.casefold(), t.name))


def _reason(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def _sqlite_schema(connection: sa.engine.Connection) -> list[TableInfo]:
    rows = connection.exec_driver_sql(
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    ).fetchall()
    tables = []
    for kind, name, ddl in rows:
        columns = _declared_columns(str(ddl or "")) if kind == "table" else None
        if columns is None:  # a view, or a table whose text cannot be read so
            names = _names_of(connection, str(name))
            columns = tuple(ColumnInfo(name=c, type="") for c in names)
        shape: Literal["table", "view"] = "view" if kind == "view" else "table"
        tables.append(TableInfo(name=str(name), kind=shape, columns=columns))
    return _sqlite_counted(connection, tables)


_TABLE_CONSTRAINTS = frozenset({"CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"})
_COLUMN_CONSTRAINTS = _TABLE_CONSTRAINTS | {
    "NOT", "NULL", "DEFAULT", "COLLATE", "REFERENCES", "GENERATED", "AS",
}  # fmt: skip


def _declared_columns(ddl: str | None) -> tuple[ColumnInfo, ...] | None:
    """The columns of a ``CREATE TABLE`` text with their types as declared (what SQLite's
    ``table_info`` reports: the words between the name and the first constraint); None
    when the text cannot be read so (a virtual table, say)."""
    try:
        tokens = SQLite().tokenize(ddl or "")
    except sqlglot.errors.SqlglotError:
        return None
    opening = next((i for i, t in enumerate(tokens) if t.token_type == TokenType.L_PAREN), None)
    if opening is None or any(t.text.upper() == "VIRTUAL" for t in tokens[:opening]):
        return None
    segments: list[list[tuple[Token, int]]] = [[]]
    depth = 0
    for token in tokens[opening + 1 :]:
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            if depth == 0:
                break
            depth -= 1
        elif token.token_type == TokenType.COMMA and depth == 0:
            segments.append([])
            continue
        segments[-1].append((token, depth))
    columns = []
    for segment in segments:
        if not segment:
            return None
        first = segment[0][0]
        quoted = first.token_type == TokenType.IDENTIFIER
        if not quoted and _word(first) in _TABLE_CONSTRAINTS:
            continue  # a table constraint, not a column
        declared = []
        for token, level in segment[1:]:
            if level == 0 and _word(token) in _COLUMN_CONSTRAINTS:
                break
            declared.append(token)
        text = ddl[declared[0].start : declared[-1].end + 1] if declared and ddl else ""
        columns.append(ColumnInfo(name=first.text, type=text))
    return tuple(columns) or None


def _word(token: Token) -> str:
    """A keyword token's first word (``PRIMARY KEY`` is one token)."""
    return token.text.split()[0].upper() if token.text.strip() else ""


def _names_of(connection: sa.engine.Connection, name: str) -> list[str]:
    """The column names of a view (or an unreadable table); none for a broken view (one
    naming a column its table no longer has): it must not hide the other tables."""
    try:
        result = connection.exec_driver_sql(f"SELECT * FROM {quote_name(name)} LIMIT 0")
    except (sa.exc.DBAPIError, sqlite3.Error):
        return []
    try:
        return list(result.keys())
    finally:
        result.close()


def _sqlite_counted(connection: sa.engine.Connection, tables: list[TableInfo]) -> list[TableInfo]:
    """Tables with ``count(*)``, the first ``COUNTED_TABLES`` of them, within the budget."""
    counted: list[TableInfo] = []
    control = RunControl.starting_now(0, COUNT_BUDGET_S)
    budget_left = True
    with Watchdog.over(control, connection):
        for table in tables:
            if table.kind == "table" and budget_left and len(counted) < COUNTED_TABLES:
                try:
                    control.check()
                    count: Any = connection.exec_driver_sql(
                        f"SELECT count(*) FROM {quote_name(table.name)}"
                    ).scalar_one()
                    table = table.model_copy(update={"row_count": int(str(count))})
                except (RunStopped, sa.exc.DBAPIError, sqlite3.Error):
                    budget_left = False  # interrupted at the deadline (or refused): stop
            counted.append(table)
    return counted


def _postgres_schema(connection: sa.engine.Connection) -> list[TableInfo]:
    from sqlalchemy.engine.reflection import ObjectKind

    inspector = sa.inspect(connection)
    default = inspector.default_schema_name
    estimates = {
        (row.nspname, row.relname): row.reltuples
        for row in connection.exec_driver_sql(
            "SELECT n.nspname, c.relname, c.reltuples FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
        )
    }
    tables = []
    for schema in inspector.get_schema_names():
        if schema.startswith("pg_") or schema in _SYSTEM_SCHEMAS:
            continue
        views = set(inspector.get_view_names(schema))
        views |= set(inspector.get_materialized_view_names(schema))
        columns = inspector.get_multi_columns(schema=schema, kind=ObjectKind.ANY)
        for (_, name), found in columns.items():
            estimate = estimates.get((schema, name))
            tables.append(
                TableInfo(
                    name=name,
                    kind="view" if name in views else "table",
                    columns=tuple(ColumnInfo(name=c["name"], type=str(c["type"])) for c in found),
                    row_count=None if estimate is None or estimate < 0 else round(estimate),
                    row_count_estimated=True,
                    schema_name=None if schema == default else schema,
                )
            )
    return tables


def _duckdb_schema(connection: sa.engine.Connection) -> list[TableInfo]:
    here = "NOT internal AND database_name = current_database()"
    default = str(connection.exec_driver_sql("SELECT current_schema()").scalar_one())
    objects: dict[tuple[str, str], tuple[Literal["table", "view"], int | None]] = {}
    for schema, name, size in connection.exec_driver_sql(
        f"SELECT schema_name, table_name, estimated_size FROM duckdb_tables() WHERE {here}"
    ):
        objects[(str(schema), str(name))] = ("table", None if size is None else int(str(size)))
    for schema, name in connection.exec_driver_sql(
        f"SELECT schema_name, view_name FROM duckdb_views() WHERE {here}"
    ):
        objects[(str(schema), str(name))] = ("view", None)
    columns: dict[tuple[str, str], list[ColumnInfo]] = {}
    for schema, name, column, kind in connection.exec_driver_sql(
        "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
        f"WHERE {here} ORDER BY schema_name, table_name, column_index"
    ):
        found = ColumnInfo(name=str(column), type=str(kind))
        columns.setdefault((str(schema), str(name)), []).append(found)
    return [
        TableInfo(
            name=name,
            kind=kind,
            columns=tuple(columns.get((schema, name), ())),
            row_count=size,
            row_count_estimated=size is not None,
            schema_name=None if schema == default else schema,
        )
        for (schema, name), (kind, size) in objects.items()
    ]


# -- a query's columns --------------------------------------------------------------------------


class ProbeFailed(KPIStoreError):
    """A query's columns could not be learned; ``query_failed`` when the database refused
    the query itself (rather than not answering in time)."""

    def __init__(self, message: str, query_failed: bool):
        super().__init__(message)
        self.query_failed = query_failed


def result_columns(
    engine: sa.engine.Engine, spec: KPISpec, timeout_s: float = PROBE_TIMEOUT_S
) -> list[str]:
    """The names of the columns ``spec.sql`` returns, without reading a row.

    Raises ProbeFailed with a message for people when the query fails or the source does
    not answer within ``timeout_s``.
    """
    values = {p.name: p.default for p in spec.parameters}  # NULL where there is no default
    bound = BoundParams.of(values)
    body = spec.sql.strip().rstrip(";").rstrip()
    wrapped = f"SELECT * FROM (\n{body}\n) AS kpi_columns LIMIT 0"
    started = time.monotonic()

    def probe(sql: str) -> list[str]:
        left = max(0.5, timeout_s - (time.monotonic() - started))
        work = lambda: preview_rows(engine, sql, bound, 1, left)  # noqa: E731
        columns, _ = within(left + 1, work, "reading the query's columns")
        return [c.name for c in columns]

    def late() -> bool:
        return time.monotonic() - started >= timeout_s

    try:
        try:
            return probe(wrapped)
        except ExecutionError:
            if late():
                raise
            # The query's own error reads better (and a query the wrapping does not suit
            # still answers): ask the query itself for its first row.
            return probe(spec.sql)
    except ExecutionError as error:
        if late():
            raise ProbeFailed(
                f"the query did not return its columns within {timeout_s:g} s", False
            ) from None
        raise ProbeFailed(str(error), True) from None
    except DataSourceError as error:
        raise ProbeFailed(str(error).rstrip("."), False) from None
