"""The durable job queue: executions are rows, so jobs survive restarts and are shared.

A job is an execution in status ``pending``. Workers claim one with a conditional
UPDATE (plus ``FOR UPDATE SKIP LOCKED`` on PostgreSQL) whose row count decides, so no
job runs twice. A running job's process writes a heartbeat every second; a job whose
heartbeat goes stale (its worker died) is re-queued once, then failed as "worker lost".
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from . import audit, db, definitions, results
from . import datasources as sources
from .config import Settings
from .errors import ExecutionError, KPIStoreError, NotFoundError, ValidationError
from .execution import Job, RunControl, Runner, describe_error
from .models import KPI, Execution
from .schema import kpi_definitions as kpi_table
from .schema import kpi_execution_results as executions
from .validation import bind_parameters
from .values import to_json_value

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0
MAX_REQUEUES = 1
WORKER_LOST = "worker lost"


def process_worker_id(label: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{label}"


def new_holder(worker_id: str) -> str:
    """A token for one claim of one run: threads of a worker never share it, so a run
    re-queued and claimed again by the same worker has a new holder."""
    return f"{worker_id}:{uuid.uuid4().hex[:8]}"


# -- creating and reading executions -----------------------------------------------------


def to_execution(row: sa.Row) -> Execution:
    values = dict(row._mapping)
    values["params"] = db.loads(values["params"]) or {}
    values["columns"] = db.loads(values["columns"]) or []
    values["first_row_sample"] = db.loads(values["first_row_sample"])
    return Execution.model_validate(values)


def get_execution(connection: sa.engine.Connection, execution_id: int) -> Execution:
    if not db.is_valid_id(execution_id):
        raise NotFoundError(f"There is no run with id {execution_id!r}.")
    row = connection.execute(sa.select(executions).where(executions.c.id == execution_id)).first()
    if row is None:
        raise NotFoundError(f"There is no run with id {execution_id}.")
    return to_execution(row)


def list_executions(
    connection: sa.engine.Connection,
    kpi_id: int | None = None,
    status: str | None = None,
    limit: int | None = 100,
    batch_id: str | None = None,
) -> list[Execution]:
    query = sa.select(executions).order_by(executions.c.id.desc())
    if kpi_id is not None:
        query = query.where(executions.c.kpi_id == kpi_id)
    if status:
        statuses = [status] if isinstance(status, str) else list(status)
        query = query.where(executions.c.status.in_(statuses))
    if batch_id:
        query = query.where(executions.c.batch_id == batch_id)
    if limit is not None:
        query = query.limit(limit)
    return [to_execution(row) for row in connection.execute(query)]


def latest_runs(
    connection: sa.engine.Connection, kpi_ids: Iterable[int] | None, per_kpi: int
) -> dict[int, list[Execution]]:
    rank = (
        sa.func.row_number()
        .over(partition_by=executions.c.kpi_id, order_by=executions.c.id.desc())
        .label("rank")
    )
    ranked = sa.select(executions, rank)
    if kpi_ids is not None:
        ranked = ranked.where(executions.c.kpi_id.in_(list(kpi_ids)))
    ranked = ranked.subquery()
    query = (
        sa.select(*(ranked.c[c.name] for c in executions.columns))
        .where(ranked.c.rank <= per_kpi)
        .order_by(ranked.c.kpi_id, ranked.c.id.desc())
    )
    runs: dict[int, list[Execution]] = {}
    for row in connection.execute(query):
        runs.setdefault(row.kpi_id, []).append(to_execution(row))
    return runs


def runnable_kpi(connection: sa.engine.Connection, kpi_id: int) -> KPI:
    # A shared lock on the definition (PostgreSQL) so a concurrent delete waits for us.
    definitions.check_id(kpi_id)
    connection.execute(
        sa.select(kpi_table.c.id).where(kpi_table.c.id == kpi_id).with_for_update(read=True)
    )
    kpi = definitions.get(connection, kpi_id)
    if kpi.status != "active":
        raise ValidationError(f"KPI '{kpi.name}' is archived and cannot run.")
    return kpi


def create_execution(
    engine: sa.engine.Engine,
    settings: Settings,
    kpi_id: int,
    params: dict[str, Any] | None,
    actor: str,
    *,
    mode: str,
    worker_id: str | None = None,
    timeout_s: float | None = None,
    batch_id: str | None = None,
) -> int:
    """Check the KPI and its parameters, then record the run: pending, or running for us."""
    if timeout_s is not None:
        try:
            timeout_s = float(timeout_s)
        except (TypeError, ValueError):
            timeout_s = -1.0
        if not 0 < timeout_s <= 86_400:
            message = "The time limit must be a number of seconds from 0 to 86400."
            raise ValidationError(message, {"timeout_s": message})
    with db.write_tx(engine) as connection:
        kpi = runnable_kpi(connection, kpi_id)
        bound = bind_parameters(kpi, params)
        now = db.utcnow()
        running = worker_id is not None
        return connection.execute(
            executions.insert().values(
                kpi_id=kpi.id,
                kpi_version=kpi.version,
                params=db.dumps({k: to_json_value(v) for k, v in bound.items()}),
                status="running" if running else "pending",
                requested_by=actor,
                mode=mode,
                batch_id=batch_id,
                created_at=now,
                started_at=now if running else None,
                heartbeat_at=now if running else None,
                worker_id=worker_id,
                attempts=0,
                truncated=False,
                columns="[]",
                timeout_s=float(timeout_s or kpi.timeout_s or settings.default_timeout_s),
                max_retries=kpi.max_retries
                if kpi.max_retries is not None
                else settings.default_max_retries,
                rows_read=0,
                cancel_requested=False,
                requeue_count=0,
            )
        ).inserted_primary_key[0]


def load_job(engine: sa.engine.Engine, execution_id: int, worker_id: str) -> Job:
    with db.read_tx(engine) as connection:
        execution = get_execution(connection, execution_id)
        kpi = definitions.get(connection, execution.kpi_id, execution.kpi_version)
        source = sources.get(connection, kpi.data_source)
    return Job(
        execution_id=execution.id,
        worker_id=worker_id,
        spec=kpi.spec(),
        source_url=source.url,
        params=bind_parameters(kpi, execution.params),
        requested_by=execution.requested_by,
        kpi_id=execution.kpi_id,
        kpi_version=execution.kpi_version,
        timeout_s=execution.timeout_s,
        max_retries=execution.max_retries,
    )


# -- claiming, cancelling, recovering ---------------------------------------------------------


def claim_next(engine: sa.engine.Engine, worker_id: str) -> int | None:
    """Atomically take the oldest pending job, or None when the queue is empty."""
    with db.write_tx(engine) as connection:
        query = (
            sa.select(executions.c.id)
            .where(executions.c.status == "pending")
            .order_by(executions.c.id)
            .limit(1)
        )
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        execution_id = connection.execute(query).scalar_one_or_none()
        if execution_id is None:
            return None
        now = db.utcnow()
        claimed = connection.execute(
            executions.update()
            .where(executions.c.id == execution_id, executions.c.status == "pending")
            .values(status="running", worker_id=worker_id, started_at=now, heartbeat_at=now)
        ).rowcount
        return execution_id if claimed == 1 else None


def release_claim(engine: sa.engine.Engine, execution_id: int, worker_id: str) -> None:
    """Hand a job this worker claimed but has not started back to the queue."""
    with db.write_tx(engine) as connection:
        results.update_owned(
            connection,
            execution_id,
            worker_id,
            status="pending",
            worker_id=None,
            started_at=None,
            heartbeat_at=None,
        )


def request_cancel(engine: sa.engine.Engine, execution_id: int, actor: str) -> Execution:
    """Cancel a pending job at once, or ask the process running it to stop."""
    with db.write_tx(engine) as connection:
        # Lock the row first (PostgreSQL): otherwise a claim committing between the read
        # and the status-conditional UPDATE below makes the cancel match nothing.
        connection.execute(
            sa.select(executions.c.id).where(executions.c.id == execution_id).with_for_update()
        )
        execution = get_execution(connection, execution_id)
        if execution.finished:
            raise ExecutionError(
                f"Run {execution_id} has already finished ({execution.status}); "
                "only queued or running runs can be cancelled."
            )
        values: dict[str, Any] = {"cancel_requested": True}
        if execution.status == "pending":
            values.update(
                status="cancelled", finished_at=db.utcnow(), error=f"Cancelled by {actor}."
            )
        connection.execute(
            executions.update()
            .where(executions.c.id == execution_id, executions.c.status == execution.status)
            .values(**values)
        )
        audit.append(
            connection,
            actor=actor,
            action=audit.CANCEL,
            kpi_id=execution.kpi_id,
            entity=f"execution:{execution_id}",
            details={"execution_id": execution_id, "status_before": execution.status},
        )
        return get_execution(connection, execution_id)


def recover_stale(engine: sa.engine.Engine, heartbeat_timeout_s: float) -> list[int]:
    """Re-queue (once) or fail runs whose process stopped beating; remove their rows."""
    cutoff = db.utcnow() - dt.timedelta(seconds=heartbeat_timeout_s)
    stale_filter = sa.and_(
        executions.c.status == "running",
        sa.or_(executions.c.heartbeat_at.is_(None), executions.c.heartbeat_at < cutoff),
    )
    with db.read_tx(engine) as connection:
        rows = connection.execute(
            sa.select(
                executions.c.id,
                executions.c.requeue_count,
                executions.c.kpi_id,
                executions.c.requested_by,
                executions.c.cancel_requested,
            ).where(stale_filter)
        ).all()
    # One short transaction per run: the audit lock is never held across runs, so a
    # worker finishing one of them cannot deadlock with this pass.
    return [row.id for row in rows if _recover_one(engine, row, stale_filter)]


def _recover_one(engine: sa.engine.Engine, row: sa.Row, stale_filter: Any) -> bool:
    if row.cancel_requested:  # asked to stop before its worker died: don't revive it
        values = dict(status="cancelled", error="Cancelled before it finished.")
    elif row.requeue_count < MAX_REQUEUES:
        values = dict(
            status="pending",
            worker_id=None,
            started_at=None,
            rows_read=0,
            requeue_count=row.requeue_count + 1,
        )
    else:
        values = dict(status="failed", error=WORKER_LOST)
    if values["status"] != "pending":
        values["finished_at"] = db.utcnow()
    with db.write_tx(engine) as connection:
        changed = connection.execute(
            executions.update().where(executions.c.id == row.id, stale_filter).values(**values)
        ).rowcount
        if changed != 1:  # a heartbeat landed meanwhile (PostgreSQL): the run is alive
            return False
        results.delete_rows(connection, row.id)
        if values["status"] != "pending":
            audit.append_run(
                connection,
                actor=row.requested_by,
                kpi_id=row.kpi_id,
                execution_id=row.id,
                details={
                    "status": values["status"],
                    "error": values["error"],
                },
            )
    log.warning("run %s: its worker stopped beating; now %s", row.id, values["status"])
    return True


# -- runs in progress in this process ----------------------------------------------------------


class ActiveRuns:
    """This process's running executions: it beats their hearts and relays cancel requests."""

    def __init__(self, engine: sa.engine.Engine, interval_s: float = HEARTBEAT_INTERVAL_S):
        self._engine = engine
        self._interval = interval_s
        self._controls: dict[int, RunControl] = {}
        self._owners: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self, execution_id: int, timeout_s: float, worker_id: str) -> RunControl:
        control = RunControl.starting_now(execution_id, timeout_s)
        self._owners[execution_id] = worker_id
        with self._lock:
            self._controls[execution_id] = control
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._beat, name="kpi-heartbeat", daemon=True
                )
                self._thread.start()
        return control

    def end(self, execution_id: int, worker_id: str) -> None:
        with self._lock:
            if self._owners.get(execution_id) == worker_id:
                self._controls.pop(execution_id, None)
                self._owners.pop(execution_id, None)

    def control(self, execution_id: int) -> RunControl | None:
        with self._lock:
            return self._controls.get(execution_id)

    def controls(self) -> list[RunControl]:
        with self._lock:
            return list(self._controls.values())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            controls = self.controls()
            if not controls:
                continue
            try:
                self._beat_once(controls)
            except sa.exc.SQLAlchemyError:
                log.exception("heartbeat failed; trying again in %s s", self._interval)

    def _beat_once(self, controls: list[RunControl]) -> None:
        ids = [c.execution_id for c in controls]
        with self._lock:
            by_owner: dict[str, list[int]] = {}
            for execution_id in ids:
                by_owner.setdefault(self._owners.get(execution_id, ""), []).append(execution_id)
        with db.write_tx(self._engine) as connection:
            now = db.utcnow()
            for owner, owned_ids in by_owner.items():
                connection.execute(
                    executions.update()
                    .where(
                        executions.c.id.in_(owned_ids),
                        executions.c.status == "running",
                        executions.c.worker_id == owner,
                    )
                    .values(heartbeat_at=now)
                )
            cancelled = set(
                connection.execute(
                    sa.select(executions.c.id).where(
                        executions.c.id.in_(ids), executions.c.cancel_requested.is_(True)
                    )
                ).scalars()
            )
        for control in controls:
            if control.execution_id in cancelled:
                control.cancel_event.set()


def run_claimed(
    engine: sa.engine.Engine, runner: Runner, active: ActiveRuns, execution_id: int, worker_id: str
) -> None:
    """Run an execution this worker holds, to a final status."""
    try:
        job = load_job(engine, execution_id, worker_id)
    except KPIStoreError as error:
        _fail_unloadable(engine, execution_id, worker_id, str(error), attempts=1)
        return
    control = active.begin(execution_id, job.timeout_s, worker_id)
    try:
        runner.run(job, control)
    except Exception as error:
        # The store itself failed (e.g. stayed locked): end the run rather than leave it
        # "running" for recovery to re-queue behind the user's back.
        log.exception("run %s could not be recorded", execution_id)
        message = f"The run could not be recorded: {describe_error(error)}"
        _fail_unloadable(engine, execution_id, worker_id, message)
        raise ExecutionError(message) from None
    finally:
        active.end(execution_id, worker_id)


def _fail_unloadable(
    engine: sa.engine.Engine, execution_id: int, worker_id: str, message: str, **values: Any
) -> None:
    """End a run this worker holds as failed, without rows."""
    with db.write_tx(engine) as connection:
        if results.update_owned(
            connection,
            execution_id,
            worker_id,
            status="failed",
            error=message,
            finished_at=db.utcnow(),
            **values,
        ):
            results.delete_rows(connection, execution_id)


def new_batch_id() -> str:
    return uuid.uuid4().hex
