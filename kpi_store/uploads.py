"""CSV upload into a new table of a local SQLite data source.

Business users bring a spreadsheet exported as CSV; it becomes a table their KPIs can
query. The file is read in chunks with pandas (bounded memory), written through a normal
writable ``sqlite3`` connection in one transaction (a bad file leaves no table behind),
and recorded in the audit log of the store before that transaction commits.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pathlib
import re
import sqlite3
import warnings
from collections.abc import Iterator
from typing import IO, Any

import pandas as pd
import sqlalchemy as sa

from . import audit, db
from .datasources import SourceFolders, sqlite_path
from .errors import DataSourceError, ValidationError
from .models import DataSource
from .vocabulary import AuditAction

TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
CHUNK_ROWS = 20_000
DATA_UPLOAD = AuditAction.DATA_UPLOAD

CSVFile = str | os.PathLike[str] | IO[bytes] | IO[str]


def import_csv(
    engine: sa.engine.Engine,
    folders: SourceFolders,
    source: DataSource,
    table: str,
    file: CSVFile,
    actor: str,
    *,
    replace: bool = False,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Write the CSV ``file`` into a new ``table`` of the SQLite data ``source``.

    ``engine`` is the store engine (for the audit entry). Returns the number of rows
    written. Raises ValidationError for a non-SQLite source, a table name that is not a
    plain identifier or already exists (unless ``replace``: then the existing table is
    dropped and written anew in the same transaction, so a bad file leaves it as it was;
    a view is never replaced), or a file that is not a readable CSV.
    """
    actor = (actor or "").strip()
    if not actor:
        raise ValidationError(
            "Say who you are: every change records its author.", {"actor": "required"}
        )
    table = (table or "").strip()
    path = _checked_target(folders, source, table)
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            existing = _make_room(connection, source, table, replace)
            rows = _write_chunks(connection, table, _read_chunks(file, chunk_rows))
            details: dict[str, Any] = {"table": table, "rows": rows}
            if existing is not None:
                details["replace"] = True
            with db.write_tx(engine) as store:
                audit.append(
                    store,
                    actor=actor[:200],
                    action=DATA_UPLOAD,
                    entity=f"data_source:{source.name}",
                    details=details,
                )
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return rows
    except (sqlite3.Error, OverflowError) as error:
        raise DataSourceError(
            f"Could not write table '{table}' into data source '{source.name}': {error}"
        ) from None
    finally:
        connection.close()


def _make_room(
    connection: sqlite3.Connection, source: DataSource, table: str, replace: bool
) -> tuple[str, str] | None:
    """Drop the table named ``table`` when asked to replace it; refuse a name in use
    otherwise, and a view always. Returns what was there (kind, name), if anything."""
    existing = _existing(connection, table)
    if existing is None:
        return None
    if not replace:
        message = f"Table '{table}' already exists in data source '{source.name}'."
        raise ValidationError(message, {"table": "already exists"})
    kind, name = existing
    if kind != "table":
        message = (
            f"'{name}' in data source '{source.name}' is a {kind}, not a table: "
            "it cannot be replaced by an upload."
        )
        raise ValidationError(message, {"table": message})
    connection.execute(f"DROP TABLE {_quote(name)}")
    return existing


def _checked_target(folders: SourceFolders, source: DataSource, table: str) -> pathlib.Path:
    try:
        url = sa.engine.make_url(source.url)
    except sa.exc.ArgumentError:
        url = None
    if url is None or url.get_backend_name() != "sqlite":
        message = (
            f"Data source '{source.name}' is not a local SQLite file; "
            "CSV files can only be uploaded into SQLite data sources."
        )
        raise ValidationError(message, {"data_source": message})
    if not TABLE_NAME.match(table) or table.lower().startswith("sqlite_"):
        message = (
            "A table name must start with a letter or _, hold only letters, digits and _ "
            "(at most 64), and not start with 'sqlite_'."
        )
        raise ValidationError(message, {"table": message})
    path = folders.check(sqlite_path(url), source.name)  # inside the folders, not the store
    if not path.is_file():
        raise DataSourceError(f"The file of data source '{source.name}' does not exist: {path}")
    return path


def _existing(connection: sqlite3.Connection, table: str) -> tuple[str, str] | None:
    """(kind, name as stored) of the table or view named ``table`` in any case, or None."""
    row = connection.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND lower(name) = lower(?)",
        (table,),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _rewind(file: CSVFile) -> None:
    if hasattr(file, "seek"):
        with contextlib.suppress(OSError, io.UnsupportedOperation):
            file.seek(0)


def _read_chunks(file: CSVFile, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The CSV as DataFrames of at most ``chunk_rows`` rows, errors made friendly.

    The header row is read on its own first: pandas would silently rename a repeated
    column name (``a``, ``a.1``), and a table must not get names nobody wrote.
    """
    try:
        _rewind(file)
        header = pd.read_csv(
            file, header=None, nrows=1, dtype=str, encoding="utf-8-sig", keep_default_na=False
        )
        names = _checked_columns([str(v) for v in header.iloc[0]] if len(header) else [])
        _rewind(file)
        reader = pd.read_csv(
            file,
            chunksize=chunk_rows,
            encoding="utf-8-sig",
            skipinitialspace=True,
            low_memory=False,
            index_col=False,  # a row longer than the header is an error, not an index
        )
        with reader, warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            for chunk in reader:
                chunk.columns = names
                yield chunk
    except pd.errors.ParserWarning as warning:
        reason = str(warning).strip().splitlines()[0]
        raise ValidationError(
            f"The file does not fit its header row: {reason}", {"file": "malformed"}
        ) from None
    except pd.errors.EmptyDataError:
        raise ValidationError(
            "The file is empty: a CSV needs a header row.", {"file": "empty"}
        ) from None
    except pd.errors.ParserError as error:
        reason = str(error).strip().splitlines()[0]
        raise ValidationError(f"The file is not a valid CSV: {reason}", {"file": reason}) from None
    except UnicodeDecodeError:
        message = "The file is not UTF-8 text; save it as 'CSV UTF-8' and try again."
        raise ValidationError(message, {"file": message}) from None
    except FileNotFoundError:
        raise ValidationError(f"There is no file {file}.", {"file": "not found"}) from None


def _checked_columns(header: list[str]) -> list[str]:
    names = [name.strip() for name in header]
    if not names:
        raise ValidationError("The file is empty: a CSV needs a header row.", {"file": "empty"})
    if any(not name for name in names):
        message = "Every column needs a name in the header row."
        raise ValidationError(message, {"file": message})
    seen: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:
            message = f"Column names must be unique (ignoring case): '{name}' repeats."
            raise ValidationError(message, {"file": message})
        seen[name.lower()] = name
    return names


def _sql_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_integer_dtype(series):
        return "INTEGER"
    if pd.api.types.is_float_dtype(series):
        return "REAL"
    return "TEXT"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cell(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item"):  # numpy scalar -> Python scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _write_chunks(
    connection: sqlite3.Connection, table: str, chunks: Iterator[pd.DataFrame]
) -> int:
    rows = 0
    insert = None
    for chunk in chunks:
        if insert is None:
            names = list(chunk.columns)
            columns = ", ".join(f"{_quote(n)} {_sql_type(chunk[n])}" for n in names)
            connection.execute(f"CREATE TABLE {_quote(table)} ({columns})")
            marks = ", ".join("?" for _ in names)
            insert = f"INSERT INTO {_quote(table)} VALUES ({marks})"
        values = chunk.astype(object).itertuples(index=False, name=None)
        connection.executemany(insert, (tuple(_cell(v) for v in row) for row in values))
        rows += len(chunk)
    if insert is None:
        raise ValidationError("The file is empty: a CSV needs a header row.", {"file": "empty"})
    return rows
