"""Reading a KPI query from its data source: read-only, under a deadline, streamed.

The query's rows flow in batches into a ``RowSink`` (the run's stored rows) while the
headline value is computed on the way; nothing holds the whole result. Errors are sorted
into transient ones (worth a retry) and the rest, and described for business users.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import sqlalchemy as sa

from . import db
from .aggregate import ValueAggregator, infer_types
from .errors import ExecutionError, KPIStoreError
from .models import Column, KPISpec
from .values import BoundParams
from .watchdog import RunControl, Watchdog

FETCH_ROWS = 5_000
FLUSH_ROWS = 50_000
FLUSH_SECONDS = 0.5
_TRANSIENT_SQLITE = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_TRANSIENT_SQLSTATES = {"40001", "40P01", "53300", "57P01", "57P02", "57P03"}


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


def is_transient(error: BaseException) -> bool:
    """A fault worth retrying: busy or locked database, lost connection."""
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


def describe_error(error: BaseException) -> str:
    """One line a business user can read."""
    if isinstance(error, sa.exc.StatementError) and error.orig is not None:
        text = str(error.orig).strip().splitlines()
        return f"The query failed: {text[0] if text else type(error.orig).__name__}"
    if isinstance(error, KPIStoreError):
        return str(error)
    return f"The run failed: {error}"


def encode_row(row: Any) -> str:
    return orjson.dumps(tuple(row), default=db.json_default).decode()


def read_into(
    engine: sa.engine.Engine,
    spec: KPISpec,
    params: BoundParams,
    control: RunControl,
    sink: RowSink,
    row_cap: int,
) -> Outcome:
    """Run ``spec.sql`` read-only on ``engine`` and stream every row into ``sink``."""
    dialect = engine.dialect.name
    options: dict[str, Any] = {}
    with engine.connect() as connection, Watchdog.over(control, connection), connection.begin():
        if dialect == "postgresql":
            # Server-side cursor, so big results stream instead of being buffered.
            options = {"stream_results": True, "yield_per": FETCH_ROWS}
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {control.remaining_ms()}")
        result = connection.execute(
            sa.text(spec.sql), params.for_dialect(dialect), execution_options=options
        )
        try:
            if dialect == "sqlite":
                # Plain tuples straight from the driver: a text() query has no result
                # processors, so this skips only the Row wrapping.
                fetch = result.cursor.fetchmany
            else:

                def fetch(size: int) -> list[tuple]:
                    return [tuple(row) for row in result.fetchmany(size)]

            streamer = _Streamer(spec, list(result.keys()), sink, row_cap)
            return streamer.stream(fetch, control)
        finally:
            result.close()


class _Streamer:
    """Moves rows from a cursor to a sink in batches, aggregating and typing on the way."""

    def __init__(self, spec: KPISpec, names: list[str], sink: RowSink, row_cap: int):
        self.names = names
        self.sink = sink
        self.row_cap = row_cap
        self.aggregator = ValueAggregator(spec.aggregation, spec.value_column)
        self.aggregator.choose_column(names, [])  # a missing value_column fails with no rows
        self.types: list[str | None] = [None] * len(names)
        self.first_sample: list[Any] | None = None
        self.buffer: list[str] = []
        self.stored = 0
        self.truncated = False

    def stream(self, fetch: Callable[[int], list[tuple]], control: RunControl) -> Outcome:
        last_flush = time.monotonic()
        dumps, default = orjson.dumps, db.json_default
        while not self.truncated:
            batch = fetch(FETCH_ROWS)
            control.check()
            if not batch:
                break
            batch = self._within_cap(batch)
            if self.first_sample is None and batch:
                self.aggregator.choose_column(self.names, batch)
                self.first_sample = orjson.loads(encode_row(batch[0]))
            infer_types(self.types, batch)
            self.aggregator.add(batch)
            self.buffer.extend([dumps(row, default=default).decode() for row in batch])
            if len(self.buffer) >= FLUSH_ROWS or time.monotonic() - last_flush >= FLUSH_SECONDS:
                self._flush()
                last_flush = time.monotonic()
        self._flush()
        control.check()
        return self._outcome()

    def _within_cap(self, batch: list[tuple]) -> list[tuple]:
        room = self.row_cap - self.stored - len(self.buffer)
        if len(batch) > room:
            self.truncated = True
            return batch[:room]
        return batch

    def _flush(self) -> None:
        self.sink.store(self.stored + 1, self.buffer, self.stored + len(self.buffer))
        self.stored += len(self.buffer)
        self.buffer.clear()

    def _outcome(self) -> Outcome:
        names, types, sample = self.names, self.types, self.first_sample
        return Outcome(
            row_count=self.stored,
            truncated=self.truncated,
            columns=[{"name": n, "type": t or "str"} for n, t in zip(names, types, strict=True)],
            value=self.aggregator.value(),
            first_row_sample=dict(zip(names, sample, strict=True)) if sample else None,
        )


def preview_rows(
    engine: sa.engine.Engine, sql: str, params: BoundParams, limit: int, timeout_s: float
) -> tuple[list[Column], list[list[Any]]]:
    """The first ``limit`` rows of a query, read-only and under a deadline; nothing stored."""
    control = RunControl.starting_now(0, timeout_s)
    try:
        with engine.connect() as connection, Watchdog.over(control, connection):
            result = connection.execute(sa.text(sql), params.for_dialect(engine.dialect.name))
            names = list(result.keys())
            batch = result.fetchmany(max(1, min(limit, 1_000)))
            result.close()
            connection.rollback()
    except sa.exc.StatementError as error:
        if control.stop_reason() == "timeout":
            raise ExecutionError(
                f"The query ran past the preview limit of {timeout_s:g} s."
            ) from None
        raise ExecutionError(describe_error(error)) from None
    types: list[str | None] = [None] * len(names)
    infer_types(types, batch)
    rows = [orjson.loads(encode_row(row)) for row in batch]
    return [Column(name=n, type=t or "str") for n, t in zip(names, types, strict=True)], rows
