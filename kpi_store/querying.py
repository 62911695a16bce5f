"""Reading a KPI query from its data source: read-only, under a deadline, streamed, bounded.

The query's rows flow in batches into a ``RowSink`` (the run's stored rows) while the
headline value is computed on the way; nothing holds the whole result. Batches are sized by
bytes, not rows: rows are taken one by one and encoded until a batch holds about
``BATCH_BYTES``, so a result of huge values never sits in memory many rows at a time.
Three limits keep one query from taking the server down: each value (SQLite refuses to
build a bigger one, ``sqlite_wall.limit_values``), the bytes a run stores, and the
deadline, which is checked while rows are encoded and stored too. Errors are sorted
into transient ones (worth a retry) and the rest, and described for business users.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol, cast

import orjson
import sqlalchemy as sa

from . import db
from .aggregate import ValueAggregator, infer_types
from .config import Settings
from .errors import ExecutionError, KPIStoreError, ResourceLimitError
from .models import Column, KPISpec
from .values import BoundParams
from .watchdog import RunControl, RunStopped, Watchdog

BATCH_BYTES = 4_000_000  # about this many encoded bytes per batch read from the cursor
BATCH_ROWS = 5_000  # and at most this many rows
FIRST_FETCH_ROWS = 16  # drivers that fetch in blocks start small, then size by bytes
FLUSH_ROWS = 50_000
FLUSH_BYTES = 16_000_000
FLUSH_SECONDS = 0.5
PREVIEW_MAX_ROWS = 1_000
SQLITE_TOOBIG = 18
_TRANSIENT_SQLITE = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_TRANSIENT_SQLSTATES = {"40001", "40P01", "53300", "57P01", "57P02", "57P03"}
_END = object()


class RowSink(Protocol):
    """Where a run's rows go: numbered from 1, with the progress that goes with them."""

    def store(self, first_row: int, encoded: list[str], rows_read: int) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What a successful read produced."""

    row_count: int
    truncated: bool
    columns: list[dict[str, str]]
    value: float | None
    first_row_sample: dict[str, Any] | None


@dataclass(frozen=True)
class Limits:
    """How much one run (or preview) may read: rows kept, bytes per value, bytes stored."""

    row_cap: int
    value_max_bytes: int
    result_max_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.row_cap, settings.value_max_bytes, settings.result_max_bytes)

    def value_too_big(self) -> ResourceLimitError:
        return ResourceLimitError(
            "A value in the result is larger than the limit of "
            f"{size_text(self.value_max_bytes)} (KPI_VALUE_MAX_BYTES)."
        )

    def result_too_big(self) -> ResourceLimitError:
        return ResourceLimitError(
            f"The result passed the limit of {size_text(self.result_max_bytes)} stored per "
            "run (KPI_RESULT_MAX_BYTES)."
        )


def size_text(size: int) -> str:
    """A byte count as people read it: 16 MB, 1.5 GB, 512 kB, 80 bytes."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def is_transient(error: BaseException) -> bool:
    """A fault worth retrying: busy or locked database, lost connection."""
    if isinstance(error, sqlite3.Error):  # read from the driver's cursor directly
        return (getattr(error, "sqlite_errorcode", 0) & 0xFF) in _TRANSIENT_SQLITE
    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        orig = error.orig
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None:
            return (code & 0xFF) in _TRANSIENT_SQLITE
        sqlstate = getattr(orig, "sqlstate", None) or ""
        return sqlstate.startswith("08") or sqlstate in _TRANSIENT_SQLSTATES
    return False


def _too_big(error: BaseException) -> bool:
    """SQLite refused to build a value over its length limit (raised by SQLAlchemy, or by
    the driver's cursor while rows are read from it directly)."""
    orig = getattr(error, "orig", None) or error
    return (getattr(orig, "sqlite_errorcode", None) or 0) & 0xFF == SQLITE_TOOBIG


def describe_error(error: BaseException) -> str:
    """One line a business user can read."""
    if isinstance(error, sa.exc.StatementError) and error.orig is not None:
        text = str(error.orig).strip().splitlines()
        return f"The query failed: {text[0] if text else type(error.orig).__name__}"
    if isinstance(error, sqlite3.Error):  # from the driver's cursor, read directly
        text = str(error).strip().splitlines()
        return f"The query failed: {text[0] if text else type(error).__name__}"
    if isinstance(error, KPIStoreError):
        return str(error)
    return f"The run failed: {error}"


def encode_row(row: Any) -> str:
    return orjson.dumps(tuple(row), default=db.json_default).decode()


def _limit_connection(connection: sa.engine.Connection, limits: Limits) -> None:
    """The run's own value limit on a SQLite source connection (each one is fresh)."""
    if connection.dialect.name == "sqlite":
        raw = db.driver(connection)
        raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.value_max_bytes)


def read_into(
    engine: sa.engine.Engine,
    spec: KPISpec,
    params: BoundParams,
    control: RunControl,
    sink: RowSink,
    settings: Settings,
) -> Outcome:
    """Run ``spec.sql`` read-only on ``engine`` and stream every row into ``sink``.

    Raises ``ResourceLimitError`` when a value or the stored bytes pass their limits.
    """
    limits = Limits.of(settings)
    dialect = engine.dialect.name
    options: dict[str, Any] = {}
    try:
        with (
            engine.connect() as connection,
            Watchdog.over(control, connection),
            connection.begin(),
        ):
            _limit_connection(connection, limits)
            if dialect == "postgresql":
                # Server-side cursor, so big results stream instead of being buffered.
                options = {"stream_results": True}
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")
                connection.exec_driver_sql(
                    f"SET LOCAL statement_timeout = {control.remaining_ms()}"
                )
            result = connection.execute(
                sa.text(spec.sql), params.for_dialect(dialect), execution_options=options
            )
            try:
                aggregator = ValueAggregator(spec.aggregation, spec.value_column)
                streamer = _Streamer(list(result.keys()), sink, limits, aggregator)
                return streamer.stream(_rows_of(result, dialect, streamer), control)
            finally:
                result.close()
    except (sa.exc.DBAPIError, sqlite3.Error) as error:
        if _too_big(error):
            raise limits.value_too_big() from None
        raise


def _rows_of(
    result: sa.CursorResult[Any], dialect: str, streamer: _Streamer
) -> Iterator[tuple[Any, ...]]:
    """The result's rows as plain tuples, one at a time.

    SQLite's cursor yields them straight from the driver, one step at a time (a text()
    query has no result processors, so this skips only the Row wrapping). Other drivers
    fetch in blocks: the first is small, later ones hold about ``BATCH_BYTES``.
    """
    if dialect == "sqlite":
        return iter(cast(Iterable[tuple], result.cursor))
    return _fetched_in_blocks(result.fetchmany, streamer)


def _fetched_in_blocks(
    fetchmany: Callable[[int], Any], streamer: _Streamer
) -> Iterator[tuple[Any, ...]]:
    size = FIRST_FETCH_ROWS
    while True:
        block = fetchmany(size)
        if not block:
            return
        for row in block:
            yield tuple(row)
        del block
        size = streamer.rows_per_batch()


class _Streamer:
    """Moves rows from a cursor to a sink in batches, aggregating and typing on the way."""

    def __init__(
        self,
        names: list[str],
        sink: RowSink,
        limits: Limits,
        aggregator: ValueAggregator | None,
    ):
        self.names = names
        self.sink = sink
        self.limits = limits
        self.aggregator = aggregator
        if aggregator is not None:
            aggregator.choose_column(names, [])  # a missing value_column fails with no rows
        self.types: list[str | None] = [None] * len(names)
        self.first_sample: list[Any] | None = None
        self.buffer: list[str] = []
        self.buffer_bytes = 0
        self.stored = 0
        self.read_bytes = 0
        self.read_rows = 0
        self.truncated = False

    def rows_per_batch(self) -> int:
        """How many rows hold about ``BATCH_BYTES``, judged by the rows read so far."""
        if not self.read_rows:
            return FIRST_FETCH_ROWS
        per_row = max(1, self.read_bytes // self.read_rows)
        return max(1, min(BATCH_ROWS, BATCH_BYTES // per_row))

    def stream(self, rows: Iterator[tuple[Any, ...]], control: RunControl) -> Outcome:
        last_flush = time.monotonic()
        while not self.truncated:
            room = self.limits.row_cap - self.stored - len(self.buffer)
            if room <= 0:
                self.truncated = next(rows, _END) is not _END
                break
            batch, encoded, size = _read_batch(rows, min(BATCH_ROWS, room))
            control.check()  # between batches: each is at most BATCH_BYTES and one row
            if not batch:
                break
            self._count(batch, encoded, size)
            if self.first_sample is None:
                if self.aggregator is not None:
                    self.aggregator.choose_column(self.names, batch)
                self.first_sample = orjson.loads(encoded[0])
            infer_types(self.types, batch)
            if self.aggregator is not None:
                self.aggregator.add(batch)
            del batch
            self.buffer.extend(encoded)
            self.buffer_bytes += size
            del encoded
            if (
                len(self.buffer) >= FLUSH_ROWS
                or self.buffer_bytes >= FLUSH_BYTES
                or time.monotonic() - last_flush >= FLUSH_SECONDS
            ):
                self._flush(control)
                last_flush = time.monotonic()
        self._flush(control)
        control.check()
        return self._outcome()

    def _count(self, batch: list[tuple[Any, ...]], encoded: list[str], size: int) -> None:
        """Add a batch to the bytes read, refusing a value or a result over its limit."""
        limits = self.limits
        if size > limits.value_max_bytes:  # only then can one of its values be too big
            for row, text in zip(batch, encoded, strict=True):
                if len(text) > limits.value_max_bytes and _has_value_over(
                    row, limits.value_max_bytes
                ):
                    raise limits.value_too_big()
        self.read_rows += len(batch)
        self.read_bytes += size
        if self.read_bytes > limits.result_max_bytes:
            raise limits.result_too_big()

    def _flush(self, control: RunControl) -> None:
        control.check()  # the deadline holds while rows are stored, too
        self.sink.store(self.stored + 1, self.buffer, self.stored + len(self.buffer))
        self.stored += len(self.buffer)
        self.buffer = []
        self.buffer_bytes = 0

    def _outcome(self) -> Outcome:
        names, types, sample = self.names, self.types, self.first_sample
        aggregator = self.aggregator
        return Outcome(
            row_count=self.stored,
            truncated=self.truncated,
            columns=[{"name": n, "type": t or "str"} for n, t in zip(names, types, strict=True)],
            value=aggregator.value() if aggregator is not None else None,
            first_row_sample=dict(zip(names, sample, strict=True)) if sample else None,
        )


def _read_batch(
    rows: Iterator[tuple[Any, ...]], most: int
) -> tuple[list[tuple[Any, ...]], list[str], int]:
    """Up to ``most`` rows and their JSON, stopping once they hold ``BATCH_BYTES``.

    Row by row, so a batch of huge values stops after the first few: a driver's
    ``fetchmany(n)`` would build all ``n`` of them first.
    """
    batch: list[tuple[Any, ...]] = []
    encoded: list[str] = []
    add_row, add_text = batch.append, encoded.append
    dumps, default = orjson.dumps, db.json_default
    size = 0
    for row in islice(rows, most):
        data = dumps(row, default=default)
        add_row(row)
        add_text(data.decode())
        size += len(data)
        if size >= BATCH_BYTES:
            break
    return batch, encoded, size


def _has_value_over(row: tuple[Any, ...], max_bytes: int) -> bool:
    for value in row:
        if isinstance(value, str):
            if len(value) > max_bytes // 4 and len(value.encode("utf-8", "replace")) > max_bytes:
                return True
        elif isinstance(value, (bytes, bytearray, memoryview)) and len(value) > max_bytes:
            return True
    return False


class _Collected:
    """A sink that keeps the rows it is given (a preview's few rows)."""

    def __init__(self) -> None:
        self.rows: list[str] = []

    def store(self, first_row: int, encoded: list[str], rows_read: int) -> None:
        self.rows.extend(encoded)


def preview_rows(
    engine: sa.engine.Engine,
    sql: str,
    params: BoundParams,
    limit: int,
    timeout_s: float,
    settings: Settings | None = None,
) -> tuple[list[Column], list[list[Any]]]:
    """The first ``limit`` rows of a query, read-only, under a deadline and the same value
    and byte limits as a run; nothing stored."""
    settings = settings or Settings()
    limits = dataclasses.replace(Limits.of(settings), row_cap=max(1, min(limit, PREVIEW_MAX_ROWS)))
    control = RunControl.starting_now(0, timeout_s)
    dialect = engine.dialect.name
    options = {"stream_results": True} if dialect == "postgresql" else {}
    sink = _Collected()
    try:
        with engine.connect() as connection, Watchdog.over(control, connection):
            _limit_connection(connection, limits)
            result = connection.execute(
                sa.text(sql), params.for_dialect(dialect), execution_options=options
            )
            try:
                streamer = _Streamer(list(result.keys()), sink, limits, None)
                streamer.stream(_rows_of(result, dialect, streamer), control)
            finally:
                result.close()
                connection.rollback()
    except RunStopped:
        raise ExecutionError(f"The query ran past the preview limit of {timeout_s:g} s.") from None
    except (sa.exc.StatementError, sqlite3.Error) as error:
        if _too_big(error):
            raise limits.value_too_big() from None
        if control.stop_reason() == "timeout":
            raise ExecutionError(
                f"The query ran past the preview limit of {timeout_s:g} s."
            ) from None
        raise ExecutionError(describe_error(error)) from None
    columns = [
        Column(name=n, type=t or "str") for n, t in zip(streamer.names, streamer.types, strict=True)
    ]
    return columns, [orjson.loads(text) for text in sink.rows]
