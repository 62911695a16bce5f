"""Whole results as XLSX and Parquet, written chunk by chunk as the stored rows are read.

Both writers take the run's columns (name and type as the run recorded them: ``int``,
``float``, ``decimal``, ``bool``, ``date``, ``datetime``, ``bytes``, ``str``; see
``aggregate.type_name``) and an iterator of row chunks (``results.row_chunks``), and hold
one chunk at a time, whatever the size of the result.

- **XLSX** (XlsxWriter in ``constant_memory`` mode: each row goes to a temporary file as
  soon as the next one starts). A bold header; numbers as numbers, dates and times as
  real Excel dates, text always as text (never a formula, whatever it starts with), NULL
  as an empty cell. A result with more rows than a sheet holds is refused before anything
  is written; so is a text value longer than a cell holds (Excel would cut it).
- **Parquet** (pyarrow, row groups of ``PARQUET_ROW_GROUP_ROWS``): one typed column per
  recorded type. A value that does not fit its column's recorded type (SQLite lets a
  column mix types) is refused with the row and column named, and the partial file is
  removed: nothing is silently converted, truncated or dropped. Text columns take any
  value, as its text.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, cast

import orjson

from .errors import ValidationError
from .models import Column

FORMATS = ("csv", "xlsx", "parquet")
EXTENSIONS = {".csv": "csv", ".xlsx": "xlsx", ".parquet": "parquet"}

XLSX_MAX_DATA_ROWS = 1_048_575  # a sheet's 1,048,576 rows, less the header
XLSX_MAX_COLUMNS = 16_384
XLSX_MAX_CELL_CHARS = 32_767
# Past this much sheet XML the .xlsx (a zip) needs ZIP64 extensions; below it, none.
_XLSX_ZIP64_FROM_BYTES = 3 * 1024**3
# Whole numbers beyond this are written as text: Excel keeps 15 significant digits.
_XLSX_EXACT_INT = 2**53
_EXCEL_FIRST_DATE = dt.date(1900, 1, 1)

PARQUET_ROW_GROUP_ROWS = 20_000
_COPY_BYTES = 1024 * 1024

Destination = str | os.PathLike[str] | IO[bytes]


def _refused(message: str) -> ValidationError:
    return ValidationError(message, {"format": message})


def format_for(path: str | os.PathLike[str], default: str = "csv") -> str:
    """The export format a file name asks for by its extension (``default`` otherwise)."""
    return EXTENSIONS.get(Path(path).suffix.lower(), default)


def checked_format(format: str) -> str:
    word = format.strip().lower() if isinstance(format, str) else format
    if word not in FORMATS:
        message = f"Unknown export format {format!r}: choose one of {', '.join(FORMATS)}."
        raise _refused(message)
    return str(word)


def binary_destination(
    dest: str | os.PathLike[str] | IO[str] | IO[bytes], format: str
) -> Destination:
    """``dest`` if XLSX or Parquet can be written to it: a path or a binary file."""
    if isinstance(dest, io.TextIOBase):
        message = f"An {format.upper()} export needs a binary file (opened with 'wb')."
        raise ValidationError(message, {"dest": message})
    return cast(Destination, dest)


def check_xlsx_fits(row_count: int, columns: Sequence[Column]) -> None:
    """Refuse a result larger than one Excel sheet, before anything is written."""
    if row_count > XLSX_MAX_DATA_ROWS:
        raise _refused(
            f"This result has {row_count:,} rows; an Excel sheet holds at most "
            f"{XLSX_MAX_DATA_ROWS:,} below its header. Export it as CSV or Parquet instead."
        )
    if len(columns) > XLSX_MAX_COLUMNS:
        raise _refused(
            f"This result has {len(columns):,} columns; an Excel sheet holds at most "
            f"{XLSX_MAX_COLUMNS:,}. Export it as CSV or Parquet instead."
        )


@contextmanager
def _binary_output(dest: Destination, kind: str, *, spool: bool) -> Iterator[IO[bytes]]:
    """A binary file to write the export to, handed over only if writing succeeds.

    A path is written as a hidden temporary file beside it, renamed over it at the end: a
    refused or failed export leaves no half file behind (and any earlier file at that path
    as it was). A file object given by the caller is written directly, or, with ``spool``
    (for a writer that writes as it goes), through a temporary file copied into it at the
    end; it is left open either way.
    """
    if not isinstance(dest, (str, os.PathLike)):
        if not spool:
            yield dest
            return
        with tempfile.TemporaryFile(prefix="kpi-export-") as scratch:
            yield scratch
            scratch.seek(0)
            shutil.copyfileobj(scratch, dest, _COPY_BYTES)
        return
    target = Path(dest).resolve() if Path(dest).is_symlink() else Path(dest)
    if target.exists() and not target.is_file():  # /dev/stdout, a pipe: write it directly
        partial = target
    else:
        partial = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if partial == target else os.O_EXCL)
        handle = os.fdopen(os.open(partial, flags, 0o666), "wb")
    except OSError as error:
        message = f"Cannot write the {kind} file '{dest}': {error.strerror or error}."
        raise ValidationError(message, {"dest": message}) from None
    try:
        with handle:
            yield handle
        if partial != target:
            if target.exists():  # an earlier file's permissions stay as they were
                os.chmod(partial, stat.S_IMODE(target.stat().st_mode))
            os.replace(partial, target)
    except BaseException:
        if partial != target:
            partial.unlink(missing_ok=True)
        raise


def _text(value: Any) -> str:
    """A value as text in a text column: the same words as the CSV export."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


# -- XLSX ------------------------------------------------------------------------------------


def write_xlsx(
    columns: Sequence[Column],
    row_chunks: Iterable[Sequence[Sequence[Any]]],
    dest: Destination,
    *,
    row_count: int | None = None,
    sheet_name: str = "Result",
) -> int:
    """Write the header and every row to one sheet of an .xlsx file; returns the rows.

    ``row_count``, when known, is checked against the sheet's size before anything is
    written; without it the rows are counted as they come, and the export is refused (and
    a file this opened removed) at the first row past the limit.
    """
    import xlsxwriter  # type: ignore[import-untyped]  # (no stubs; only exports need it)

    check_xlsx_fits(row_count or 0, columns)
    with (
        _binary_output(dest, "Excel", spool=False) as handle,
        tempfile.TemporaryDirectory(prefix="kpi-xlsx-") as scratch,
    ):
        workbook = xlsxwriter.Workbook(
            handle,
            {
                "constant_memory": True,
                "tmpdir": scratch,
                "strings_to_formulas": False,
                "strings_to_numbers": False,
                "strings_to_urls": False,
            },
        )
        sheet = workbook.add_worksheet(sheet_name, worksheet_class=_plain_text_sheet())
        bold = workbook.add_format({"bold": True})
        for position, column in enumerate(columns):
            sheet.write_string(0, position, column.name, bold)
        sheet.freeze_panes(1, 0)
        cells = _XlsxCells(workbook, sheet, columns)
        written = 0
        for chunk in row_chunks:
            if written + len(chunk) > XLSX_MAX_DATA_ROWS:
                check_xlsx_fits(written + len(chunk), columns)
            cells.write(chunk, written + 1)
            written += len(chunk)
        if _folder_bytes(scratch) > _XLSX_ZIP64_FROM_BYTES:
            workbook.use_zip64()
        workbook.close()
    return written


def _plain_text_sheet() -> type:
    """XlsxWriter's worksheet, except that text is always written as the text it is.

    In ``constant_memory`` mode XlsxWriter writes a string that starts with ``<r>`` and
    ends with ``</r>`` into the sheet's XML as it is, as ready-made rich text: a result
    value shaped like that could add cells, formulas included, or break the file. Results
    never hold rich text, so this sheet writes every string as an escaped inline string.
    """
    from xlsxwriter.worksheet import Worksheet  # type: ignore[import-untyped]

    class PlainTextSheet(Worksheet):
        def _xml_rich_inline_string(self, string: str, attributes: Any = ()) -> None:
            # Only reached for text shaped "<r>...</r>", which has no outer whitespace.
            self._xml_inline_string(string, False, list(attributes))

    return PlainTextSheet


def _folder_bytes(folder: str) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file())


class _XlsxCells:
    """Writes rows cell by cell: each value by its own type, text in the date, time and
    decimal columns read as the dates, times and numbers it stands for."""

    def __init__(self, workbook: Any, sheet: Any, columns: Sequence[Column]):
        self.names = [c.name for c in columns]
        self.write_string: Callable[..., int] = sheet.write_string
        self.write_number: Callable[..., int] = sheet.write_number
        self.write_boolean: Callable[..., int] = sheet.write_boolean
        self.write_datetime: Callable[..., int] = sheet.write_datetime
        self.date_format = workbook.add_format({"num_format": "yyyy-mm-dd"})
        self.datetime_format = workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        by_type: dict[str, Callable[[int, int, str], None]] = {
            "date": self._date,
            "datetime": self._datetime,
            "decimal": self._decimal,
        }
        # For each column: what to do with a text value (None: write it as text).
        self.text_cells: list[Callable[[int, int, str], None] | None] = [
            by_type.get(c.type) for c in columns
        ]

    def write(self, rows: Sequence[Sequence[Any]], first_row: int) -> None:
        text_cells, write_string = self.text_cells, self.write_string
        write_number, write_boolean = self.write_number, self.write_boolean
        exact = _XLSX_EXACT_INT
        for row_index, row in enumerate(rows, start=first_row):
            for col, value in enumerate(row):
                if value is None:
                    continue
                kind = type(value)
                if kind is str:
                    special = text_cells[col]
                    if special is not None:
                        special(row_index, col, value)
                    elif write_string(row_index, col, value) == -2:
                        self._too_long(row_index, col, value)
                elif kind is float:
                    write_number(row_index, col, value)
                elif kind is int:
                    if -exact <= value <= exact:
                        write_number(row_index, col, value)
                    else:
                        write_string(row_index, col, str(value))
                elif kind is bool:
                    write_boolean(row_index, col, value)
                else:  # JSON objects and arrays (e.g. PostgreSQL json columns)
                    self._string(row_index, col, _text(value))

    def _string(self, row: int, col: int, text: str) -> None:
        if self.write_string(row, col, text) == -2:
            self._too_long(row, col, text)

    def _too_long(self, row: int, col: int, text: str) -> None:
        raise _refused(
            f"Row {row:,}, column '{self.names[col]}' holds {len(text):,} characters; an "
            f"Excel cell holds at most {XLSX_MAX_CELL_CHARS:,}. Export it as CSV or Parquet "
            "instead."
        )

    def _date(self, row: int, col: int, text: str) -> None:
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            day = None
        if day is None or day < _EXCEL_FIRST_DATE:  # Excel has no dates before 1900
            self._string(row, col, text)
        else:
            self.write_datetime(row, col, day, self.date_format)

    def _datetime(self, row: int, col: int, text: str) -> None:
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            # Excel has no time zones: an instant is written as UTC time.
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
        if moment is None or moment.date() < _EXCEL_FIRST_DATE:
            self._string(row, col, text)
        else:
            self.write_datetime(row, col, moment, self.datetime_format)

    def _decimal(self, row: int, col: int, text: str) -> None:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            self.write_number(row, col, number)
        else:
            self._string(row, col, text)


# -- Parquet ---------------------------------------------------------------------------------


def parquet_type(column_type: str) -> Any:
    """The Arrow type a recorded column type is written as (text for any other word).

    ``decimal`` stays text, its exact digits: the scale of a NUMERIC result is not known
    before its last row, and a float would round it.
    """
    import pyarrow as pa  # type: ignore[import-untyped]

    return {
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "date": pa.date32(),
        "datetime": pa.timestamp("us"),
        "bytes": pa.binary(),
    }.get(column_type, pa.string())


# What each typed column takes as it is; anything else is refused. A float in an int
# column is taken only if it is a whole number (so nothing is rounded).
_NONE = type(None)
_FITS: dict[str, frozenset[type]] = {
    "int": frozenset({int, float, _NONE}),
    "float": frozenset({float, int, _NONE}),
    "bool": frozenset({bool, _NONE}),
    "date": frozenset({str, _NONE}),
    "datetime": frozenset({str, _NONE}),
    "bytes": frozenset({str, _NONE}),
}


class _Misfit(Exception):
    def __init__(self, position: int):
        self.position = position


def write_parquet(
    columns: Sequence[Column],
    row_chunks: Iterable[Sequence[Sequence[Any]]],
    dest: Destination,
    *,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Write every row to a Parquet file, one typed column per recorded column type;
    returns the rows. Column names are made unique (``a``, ``a_2``) as Parquet readers
    need; the recorded names and types are kept in the file's metadata
    (``kpi_store.columns``), with ``metadata`` beside them.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    types = [c.type for c in columns]
    rows_iter = iter(row_chunks)
    first = next(rows_iter, [])
    zone = [
        _zone_of(first, position) if t == "datetime" else None for position, t in enumerate(types)
    ]
    fields = [
        pa.field(name, pa.timestamp("us", tz=tz) if tz else parquet_type(kind))
        for name, kind, tz in zip(
            _unique_names([c.name for c in columns]), types, zone, strict=True
        )
    ]
    recorded = [{"name": c.name, "type": c.type} for c in columns]
    extra = {"kpi_store.columns": recorded, **(metadata or {})}
    schema = pa.schema(fields, metadata={key: orjson.dumps(value) for key, value in extra.items()})
    written = 0
    pending: list[Any] = []
    pending_rows = 0
    with (
        _binary_output(dest, "Parquet", spool=True) as handle,
        pq.ParquetWriter(handle, schema) as writer,
    ):
        for chunk in _chain(first, rows_iter):
            if not chunk:
                continue
            pending.append(_record_batch(schema, types, chunk, written, columns))
            written += len(chunk)
            pending_rows += len(chunk)
            if pending_rows >= PARQUET_ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(pending, schema))
                pending, pending_rows = [], 0
        if pending:
            writer.write_table(pa.Table.from_batches(pending, schema))
    return written


def _unique_names(names: list[str]) -> list[str]:
    """Column names made unique (``SELECT a, a`` is legal SQL; a Parquet schema is read by
    name): the second ``a`` becomes ``a_2``."""
    unique: list[str] = []
    seen: set[str] = set()
    for name in names:
        candidate, number = name, 1
        while candidate in seen:
            number += 1
            candidate = f"{name}_{number}"
        seen.add(candidate)
        unique.append(candidate)
    return unique


def _chain(first: Sequence[Sequence[Any]], rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _zone_of(rows: Sequence[Sequence[Any]], position: int) -> str | None:
    """ "UTC" if the first time in this column carries an offset (an instant), else None."""
    for row in rows:
        value = row[position]
        if isinstance(value, str):
            try:
                return "UTC" if dt.datetime.fromisoformat(value).tzinfo else None
            except ValueError:
                return None
    return None


def _record_batch(
    schema: Any,
    types: list[str],
    rows: Sequence[Sequence[Any]],
    before: int,
    columns: Sequence[Column],
) -> Any:
    import pyarrow as pa

    arrays = []
    by_column = list(zip(*rows, strict=True)) if columns else []
    for position, (field, kind) in enumerate(zip(schema, types, strict=True)):
        values = by_column[position]
        try:
            arrays.append(_arrow_array(field.type, kind, values))
        except _Misfit as misfit:
            raise _misfit_error(
                columns[position], before + misfit.position + 1, values[misfit.position]
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _arrow_array(arrow_type: Any, kind: str, values: Sequence[Any]) -> Any:
    """One column of a chunk as an Arrow array; raises ``_Misfit`` at the first value
    that does not fit the column's recorded type."""
    import pyarrow as pa

    allowed = _FITS.get(kind)
    if allowed is None:  # a text column: any value, as its text
        if not set(map(type, values)) <= {str, _NONE}:
            values = [None if v is None else _text(v) for v in values]
        return pa.array(values, arrow_type)
    kinds = set(map(type, values))
    whole = (
        kind != "int"
        or float not in kinds
        or all(type(v) is not float or v.is_integer() for v in values)
    )
    if not kinds <= allowed or not whole:
        for position, value in enumerate(values):
            kind_of = type(value)
            if kind_of not in allowed or (
                kind == "int" and kind_of is float and not value.is_integer()
            ):
                raise _Misfit(position)
    try:
        return _converted(arrow_type, kind, values)
    except (ValueError, OverflowError, pa.ArrowException):
        for position, value in enumerate(values):
            try:
                _converted(arrow_type, kind, [value])
            except (ValueError, OverflowError, pa.ArrowException):
                raise _Misfit(position) from None
        raise


def _converted(arrow_type: Any, kind: str, values: Sequence[Any]) -> Any:
    import pyarrow as pa

    if kind == "bytes":
        data = [None if v is None else bytes.fromhex(v) for v in values]
        return pa.array(data, arrow_type)
    if kind in ("date", "datetime"):
        return pa.array(values, pa.string()).cast(arrow_type)
    return pa.array(values, arrow_type)


def _misfit_error(column: Column, row: int, value: Any) -> ValidationError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return _refused(
        f"Row {row:,} of column '{column.name}' holds {shown}, which does not fit the "
        f"column's type ({column.type}, as the run recorded it from its first value); a "
        "Parquet column holds one type. Export it as CSV or XLSX (which keep each value "
        "as it is), or cast the column in the KPI's SQL."
    )
