"""Running one KPI: query a data source read-only, under a deadline, and store the rows.

The deadline and cancellation work from any thread: a watchdog thread interrupts the
running statement (SQLite ``interrupt()``, PostgreSQL ``cancel``), and PostgreSQL also
gets ``statement_timeout`` so the server stops on its own. Transient faults (locked or
busy database, dropped connection) are retried with exponential backoff and jitter;
anything else fails at once. A run that does not succeed leaves no rows behind.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
import tenacity

from . import audit, db, results
from . import datasources as sources
from .config import Settings
from .errors import ExecutionError, KPIStoreError
from .models import Column, KPISpec
from .schema import kpi_execution_results as executions
from .values import to_json_value

log = logging.getLogger(__name__)

FETCH_ROWS = 5_000
FLUSH_ROWS = 50_000
FLUSH_SECONDS = 0.5
WATCHDOG_TICK_S = 0.05
_TRANSIENT_SQLITE = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_TRANSIENT_SQLSTATES = {"40001", "40P01", "53300", "57P01", "57P02", "57P03"}


class RunStopped(Exception):
    """The run was stopped on purpose: ``reason`` is "timeout" or "cancelled"."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class RunControl:
    """What another thread uses to stop a run, and how the run learns it should stop."""

    execution_id: int
    timeout_s: float
    deadline: float
    cancel_event: threading.Event = field(default_factory=threading.Event)
    requeue: bool = False

    def stop_and_requeue(self) -> None:
        """Stop the run and hand it back to the queue (a worker shutting down)."""
        self.requeue = True
        self.cancel_event.set()

    @classmethod
    def starting_now(cls, execution_id: int, timeout_s: float) -> RunControl:
        return cls(execution_id, timeout_s, time.monotonic() + timeout_s)

    def stop_reason(self) -> str | None:
        if self.cancel_event.is_set():
            return "cancelled"
        if time.monotonic() >= self.deadline:
            return "timeout"
        return None

    def check(self) -> None:
        reason = self.stop_reason()
        if reason:
            raise RunStopped(reason)


class _Watchdog:
    """Interrupts a connection's running statement when the run must stop."""

    def __init__(self, control: RunControl, interrupt: Callable[[], None]):
        self._control = control
        self._interrupt = interrupt
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="kpi-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(WATCHDOG_TICK_S):
            if self._control.stop_reason():
                with self._lock:
                    if not self._done.is_set():
                        self._interrupt()
                return


def _interrupter(connection: sa.engine.Connection) -> Callable[[], None]:
    raw = connection.connection.driver_connection
    if connection.dialect.name == "sqlite":
        return raw.interrupt
    return getattr(raw, "cancel_safe", None) or raw.cancel


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


# -- reading a result -------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, decimal.Decimal):
        return "decimal"
    if isinstance(value, dt.datetime):
        return "datetime"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    return "str"


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, (int, float, decimal.Decimal)):
        number = float(value)
        return number if math.isfinite(number) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class ValueAggregator:
    """The headline value, computed as rows stream past."""

    def __init__(self, aggregation: str, value_column: str | None):
        self.aggregation = aggregation
        self.value_column = value_column
        self.index: int | None = None
        self.rows = 0
        self.count = 0
        self.total = 0.0
        self.low: float | None = None
        self.high: float | None = None
        self.first: float | None = None
        self._first_seen = False

    def choose_column(self, names: Sequence[str], batch: Sequence[Sequence[Any]]) -> None:
        if self.index is not None or self.aggregation == "count":
            return
        if self.value_column is not None:
            if self.value_column not in names:
                shown = ", ".join(names)
                raise KPIStoreError(
                    f"The value column '{self.value_column}' is not in the result "
                    f"(columns: {shown})."
                )
            self.index = list(names).index(self.value_column)
            return
        for position in range(len(names)):
            sample = next((row[position] for row in batch if row[position] is not None), None)
            if _type_name(sample) in ("int", "float", "decimal"):
                self.index = position
                return

    def add(self, batch: Sequence[Sequence[Any]]) -> None:
        self.rows += len(batch)
        if self.index is None or not batch:
            return
        index = self.index
        if not self._first_seen:
            self.first, self._first_seen = _number(batch[0][index]), True
        present = [v for row in batch if (v := row[index]) is not None]
        try:
            # Fast path, in C: a column of numbers (fsum refuses text, bytes and dates).
            total = math.fsum(present)
            if not math.isfinite(total):
                raise TypeError
            low, high = float(min(present)), float(max(present))
        except (TypeError, ValueError, OverflowError):
            # Text, NaN or infinity: convert value by value, as before.
            present = [v for v in map(_number, present) if v is not None]
            if not present:
                return
            total = math.fsum(present)
            low, high = min(present), max(present)
        self.count += len(present)
        self.total += total
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)

    def value(self) -> float | None:
        if self.aggregation == "count":
            return float(self.rows)
        if self.index is None or (self.count == 0 and self.aggregation != "first"):
            return None
        return {
            "sum": lambda: self.total,
            "avg": lambda: self.total / self.count,
            "min": lambda: self.low,
            "max": lambda: self.high,
            "first": lambda: self.first,
        }[self.aggregation]()


@dataclass
class Outcome:
    row_count: int
    truncated: bool
    columns: list[dict[str, str]]
    value: float | None
    first_row_sample: dict[str, Any] | None


def bind_for(dialect: str, params: dict[str, Any]) -> dict[str, Any]:
    """SQLite compares ISO text; other databases get real date objects."""
    if dialect == "sqlite":
        return {k: to_json_value(v) for k, v in params.items()}
    return dict(params)


def _encode(row: Sequence[Any]) -> str:
    return orjson.dumps(tuple(row), default=db._json_default).decode()


# -- one run ------------------------------------------------------------------------------


@dataclass
class Job:
    """Everything a run needs, read once from the store when it starts."""

    execution_id: int
    worker_id: str
    spec: KPISpec
    source_url: str
    params: dict[str, Any]
    requested_by: str
    kpi_id: int
    kpi_version: int
    timeout_s: float
    max_retries: int


class Runner:
    """Runs executions that are already marked ``running`` for ``worker_id``."""

    def __init__(
        self,
        engine: sa.engine.Engine,
        source_engines: sources.SourceEngines,
        settings: Settings,
        retry_wait: tenacity.wait.wait_base | None = None,
    ):
        self.engine = engine
        self.source_engines = source_engines
        self.settings = settings
        self.retry_wait = retry_wait or tenacity.wait_exponential_jitter(
            multiplier=0.2, max=5, jitter=0.2
        )

    def run(self, job: Job, control: RunControl) -> None:
        """Run to a final status; never raises for a failure of the query itself."""
        started = time.monotonic()
        retries: list[str] = []
        attempts = 0

        def before_sleep(state: tenacity.RetryCallState) -> None:
            reason = describe_error(state.outcome.exception())
            retries.append(f"attempt {state.attempt_number}: {reason}")
            log.warning(
                "run %s: attempt %s failed with a transient fault, retrying: %s",
                job.execution_id,
                state.attempt_number,
                reason,
            )
            self._discard_rows(job)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(job.max_retries + 1),
            wait=self.retry_wait,
            retry=tenacity.retry_if_exception(is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    self._record_attempt(job, attempts)
                    control.check()
                    outcome = self._attempt(job, control)
        except results.LostOwnership:
            log.warning("run %s was taken from this worker; leaving it", job.execution_id)
            return
        except BaseException as error:  # noqa: BLE001 - every failure becomes a status
            if control.requeue:
                self._requeue(job)
                return
            status, message = self._classify(error, control)
            self._finish_unsuccessful(job, status, message, attempts, started, retries)
            if not isinstance(error, Exception):
                raise
            return
        self._finish_success(job, outcome, attempts, started, retries)

    def _classify(self, error: BaseException, control: RunControl) -> tuple[str, str]:
        reason = error.reason if isinstance(error, RunStopped) else control.stop_reason()
        if reason == "timeout":
            return "timeout", f"Stopped at the time limit of {control.timeout_s:g} s."
        if reason == "cancelled":
            return "cancelled", "Cancelled before it finished."
        if not isinstance(error, Exception):
            return "failed", "The run was interrupted (the process is stopping)."
        return "failed", describe_error(error)

    def _record_attempt(self, job: Job, attempts: int) -> None:
        with db.write_tx(self.engine) as connection:
            if not results.update_owned(
                connection,
                job.execution_id,
                job.worker_id,
                attempts=attempts,
                heartbeat_at=db.utcnow(),
            ):
                raise results.LostOwnership(job.execution_id)

    def _attempt(self, job: Job, control: RunControl) -> Outcome:
        engine = self.source_engines.get(job.source_url)
        dialect = engine.dialect.name
        options: dict[str, Any] = {}
        with (
            engine.connect() as connection,
            _Watchdog(control, _interrupter(connection)),
            connection.begin(),
        ):
            if dialect == "postgresql":
                # Server-side cursor, so big results stream instead of being buffered.
                options = {"stream_results": True, "yield_per": FETCH_ROWS}
                remaining_ms = max(1, int((control.deadline - time.monotonic()) * 1000))
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")
                connection.exec_driver_sql(f"SET LOCAL statement_timeout = {remaining_ms}")
            result = connection.execute(
                sa.text(job.spec.sql), bind_for(dialect, job.params), execution_options=options
            )
            try:
                if dialect == "sqlite":
                    # Plain tuples straight from the driver: a text() query has no result
                    # processors, so this skips only the Row wrapping.
                    fetch = result.cursor.fetchmany
                else:

                    def fetch(size: int) -> list[tuple]:
                        return [tuple(row) for row in result.fetchmany(size)]

                return self._stream(job, control, list(result.keys()), fetch)
            finally:
                result.close()

    def _stream(
        self,
        job: Job,
        control: RunControl,
        names: list[str],
        fetch: Callable[[int], list[tuple]],
    ) -> Outcome:
        cap = self.settings.row_cap
        aggregator = ValueAggregator(job.spec.aggregation, job.spec.value_column)
        aggregator.choose_column(names, [])  # a missing value_column fails even with no rows
        types: list[str | None] = [None] * len(names)
        first_sample: dict[str, Any] | None = None
        buffer: list[str] = []
        stored = 0
        truncated = False
        last_flush = time.monotonic()
        dumps, default = orjson.dumps, db._json_default
        while True:
            batch = fetch(FETCH_ROWS)
            control.check()
            if not batch:
                break
            room = cap - stored - len(buffer)
            if len(batch) > room:
                batch, truncated = batch[:room], True
            if first_sample is None and batch:
                aggregator.choose_column(names, batch)
                first_sample = orjson.loads(_encode(batch[0]))
            _infer_types(types, batch)
            aggregator.add(batch)
            buffer.extend([dumps(row, default=default).decode() for row in batch])
            if len(buffer) >= FLUSH_ROWS or time.monotonic() - last_flush >= FLUSH_SECONDS:
                stored = self._flush(job, stored, buffer)
                last_flush = time.monotonic()
            if truncated:
                break
        stored = self._flush(job, stored, buffer)
        control.check()
        return Outcome(
            row_count=stored,
            truncated=truncated,
            columns=[{"name": n, "type": t or "str"} for n, t in zip(names, types, strict=True)],
            value=aggregator.value(),
            first_row_sample=dict(zip(names, first_sample, strict=True)) if first_sample else None,
        )

    def _flush(self, job: Job, stored: int, buffer: list[str]) -> int:
        results.write_batch(
            self.engine, job.execution_id, job.worker_id, stored + 1, buffer, stored + len(buffer)
        )
        stored += len(buffer)
        buffer.clear()
        return stored

    def _discard_rows(self, job: Job) -> None:
        with db.write_tx(self.engine) as connection:
            owned = connection.execute(  # another worker may hold the run now: keep its rows
                sa.select(executions.c.id)
                .where(results.owned_by(job.execution_id, job.worker_id))
                .with_for_update()
            ).first()
            if owned is not None:
                results.delete_rows(connection, job.execution_id)

    def _requeue(self, job: Job) -> None:
        with db.write_tx(self.engine) as connection:
            if results.update_owned(
                connection,
                job.execution_id,
                job.worker_id,
                status="pending",
                worker_id=None,
                started_at=None,
                rows_read=0,
            ):
                results.delete_rows(connection, job.execution_id)
        log.info("run %s handed back to the queue", job.execution_id)

    def _finish(self, job: Job, values: dict[str, Any], started: float, details: dict) -> None:
        now = db.utcnow()
        with db.write_tx(self.engine) as connection:
            owned = results.update_owned(
                connection,
                job.execution_id,
                job.worker_id,
                **values,
                finished_at=now,
                heartbeat_at=now,
                execution_time_ms=round((time.monotonic() - started) * 1000, 3),
            )
            if not owned:
                raise results.LostOwnership(job.execution_id)
            if values["status"] != "success":
                results.delete_rows(connection, job.execution_id)
            audit.append_run(
                connection,
                actor=job.requested_by,
                kpi_id=job.kpi_id,
                execution_id=job.execution_id,
                details={
                    "version": job.kpi_version,
                    "params": {k: to_json_value(v) for k, v in job.params.items()},
                    "status": values["status"],
                    **details,
                },
            )

    def _finish_success(
        self, job: Job, outcome: Outcome, attempts: int, started: float, retries: list[str]
    ) -> None:
        try:
            self._finish(
                job,
                {
                    "status": "success",
                    "attempts": attempts,
                    "error": None,
                    "row_count": outcome.row_count,
                    "rows_read": outcome.row_count,
                    "truncated": outcome.truncated,
                    "columns": db.dumps(outcome.columns),
                    "value": outcome.value,
                    "first_row_sample": db.dumps(outcome.first_row_sample)
                    if outcome.first_row_sample is not None
                    else None,
                },
                started,
                {
                    "row_count": outcome.row_count,
                    "value": outcome.value,
                    "attempts": attempts,
                    "retries": retries,
                },
            )
        except results.LostOwnership:
            log.warning("run %s was taken from this worker before it finished", job.execution_id)

    def _finish_unsuccessful(
        self,
        job: Job,
        status: str,
        message: str,
        attempts: int,
        started: float,
        retries: list[str],
    ) -> None:
        try:
            self._finish(
                job,
                {
                    "status": status,
                    "attempts": max(attempts, 1),
                    "error": message,
                    "row_count": None,
                    "value": None,
                },
                started,
                {"error": message, "attempts": max(attempts, 1), "retries": retries},
            )
        except results.LostOwnership:
            log.warning("run %s was taken from this worker before it finished", job.execution_id)


def _infer_types(types: list[str | None], batch: Sequence[Sequence[Any]]) -> None:
    for position, known in enumerate(types):
        if known is None:
            sample = next((row[position] for row in batch if row[position] is not None), None)
            if sample is not None:
                types[position] = _type_name(sample)


def preview_rows(
    engine: sa.engine.Engine, sql: str, params: dict[str, Any], limit: int, timeout_s: float
) -> tuple[list[Column], list[list[Any]]]:
    """The first ``limit`` rows of a query, read-only and under a deadline; nothing stored."""
    control = RunControl.starting_now(0, timeout_s)
    try:
        with engine.connect() as connection, _Watchdog(control, _interrupter(connection)):
            result = connection.execute(sa.text(sql), bind_for(engine.dialect.name, params))
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
    _infer_types(types, batch)
    rows = [orjson.loads(_encode(row)) for row in batch]
    return [Column(name=n, type=t or "str") for n, t in zip(names, types, strict=True)], rows
