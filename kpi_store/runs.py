"""A run's whole life in the store, and the only module that writes its row.

A run is a row of ``kpi_execution_results``: created ``pending`` (queued) or ``running``
for a holder (run now), claimed by a worker, given attempts, rows and heartbeats while
its holder keeps it, handed back to the queue, and finished exactly once — always with
its EXECUTE audit entry, after which every ``on_finished`` hook hears of it.

Every write made on behalf of a holder is guarded by ``owned_by``: it matches only while
the run is ``running`` for that holder's token, so a worker that lost its run (re-queued
after its heartbeat went stale, cancelled) can never write into it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from . import audit, db, definitions, fair_share, results, run_records, series
from . import datasources as sources
from .config import Settings
from .errors import ExecutionError
from .held_runs import HeldRun, owned_by
from .models import Execution
from .runner import Job, RunResult
from .schema import kpi_execution_results as executions
from .validation import bind_parameters, checked_timeout, stored_parameters
from .vocabulary import RunMode, RunStatus

log = logging.getLogger(__name__)

MAX_REQUEUES = 1
WORKER_LOST = "worker lost"
PROCESS_STOPPED = "The process running it stopped before it finished."

FinishedHook = Callable[[Execution], None]


def _stale(cutoff: dt.datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        executions.c.status == RunStatus.RUNNING,
        sa.or_(executions.c.heartbeat_at.is_(None), executions.c.heartbeat_at < cutoff),
    )


def new_batch_id() -> str:
    return uuid.uuid4().hex


class RunLedger:
    """Creates, claims, guards, releases, finishes, cancels and recovers runs."""

    def __init__(self, engine: sa.engine.Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self._hooks: list[FinishedHook] = []
        self._hooks_lock = threading.Lock()

    # -- the "run finished" hook --------------------------------------------------------

    def on_finished(self, hook: FinishedHook) -> FinishedHook:
        """Call ``hook(execution)`` after each run this process ends has been recorded."""
        with self._hooks_lock:
            self._hooks.append(hook)
        return hook

    def _announce(self, execution_id: int) -> None:
        with self._hooks_lock:
            hooks = list(self._hooks)
        if not hooks:
            return
        with db.read_tx(self.engine) as connection:
            execution = run_records.get(connection, execution_id)
        for hook in hooks:
            try:
                hook(execution)
            except Exception:  # a subscriber's fault never changes the run
                log.exception("a run-finished hook failed for run %s", execution_id)

    # -- creating -------------------------------------------------------------------------

    def create(
        self,
        kpi_id: int,
        params: dict[str, Any] | None,
        actor: str,
        *,
        mode: RunMode,
        holder: str | None = None,
        timeout_s: float | None = None,
        batch_id: str | None = None,
        ignore_undeclared: bool = False,
        schedule_id: int | None = None,
    ) -> int:
        """Check the KPI and its parameters, then record the run: queued, or running for
        ``holder``. ``ignore_undeclared`` drops parameters the KPI does not declare."""
        with db.write_tx(self.engine) as connection:
            return self.insert(
                connection,
                kpi_id,
                params,
                actor,
                mode=mode,
                holder=holder,
                timeout_s=timeout_s,
                batch_id=batch_id,
                ignore_undeclared=ignore_undeclared,
                schedule_id=schedule_id,
            )

    def insert(
        self,
        connection: sa.engine.Connection,
        kpi_id: int,
        params: dict[str, Any] | None,
        actor: str,
        *,
        mode: RunMode,
        holder: str | None = None,
        timeout_s: float | None = None,
        batch_id: str | None = None,
        ignore_undeclared: bool = False,
        schedule_id: int | None = None,
    ) -> int:
        """``create`` inside the caller's write transaction (a schedule's tick queues its
        run in the transaction that claims the tick)."""
        timeout_s = checked_timeout(timeout_s)
        kpi = definitions.runnable(connection, kpi_id)
        bound = bind_parameters(kpi, params, ignore_undeclared=ignore_undeclared)
        running = holder is not None
        fair_share.check(connection, self.settings, actor, running, batch_id)
        now = db.utcnow()
        max_retries = kpi.max_retries
        period_start, period_end = series.period_of(kpi, bound.json)
        inserted = connection.execute(
            executions.insert().values(
                kpi_id=kpi.id,
                kpi_version=kpi.version,
                params=db.dumps(bound.json),
                status=RunStatus.RUNNING if running else RunStatus.PENDING,
                requested_by=actor,
                mode=mode,
                batch_id=batch_id,
                created_at=now,
                started_at=now if running else None,
                heartbeat_at=now if running else None,
                worker_id=holder,
                attempts=0,
                truncated=False,
                columns="[]",
                timeout_s=float(timeout_s or kpi.timeout_s or self.settings.default_timeout_s),
                max_retries=self.settings.default_max_retries
                if max_retries is None
                else max_retries,
                rows_read=0,
                cancel_requested=False,
                requeue_count=0,
                series_key=series.series_key(kpi, bound.json),
                period_start=period_start,
                period_end=period_end,
                schedule_id=schedule_id,
            )
        )
        return db.inserted_id(inserted)

    def load_job(self, execution_id: int, holder: str) -> Job:
        """What the holder needs to run the run: its KPI version, source and parameters."""
        with db.read_tx(self.engine) as connection:
            execution = run_records.get(connection, execution_id)
            kpi = definitions.get(connection, execution.kpi_id, execution.kpi_version)
            source_url = sources.connect_url(connection, kpi.data_source)
        spec = kpi.spec()
        return Job(
            execution_id=execution.id,
            worker_id=holder,
            spec=spec,
            source_url=source_url,
            params=stored_parameters(spec, execution.params),
            requested_by=execution.requested_by,
            kpi_id=execution.kpi_id,
            kpi_version=execution.kpi_version,
            timeout_s=execution.timeout_s,
            max_retries=execution.max_retries,
        )

    def held(self, execution_id: int, holder: str) -> HeldRun:
        return HeldRun(self.engine, execution_id, holder)

    # -- the queue --------------------------------------------------------------------------

    def claim_next(self, holder: str) -> int | None:
        """Atomically take the oldest queued run for ``holder``; None when there is none."""
        with db.write_tx(self.engine) as connection:
            query = (
                sa.select(executions.c.id)
                .where(executions.c.status == RunStatus.PENDING)
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
                .where(executions.c.id == execution_id, executions.c.status == RunStatus.PENDING)
                .values(
                    status=RunStatus.RUNNING, worker_id=holder, started_at=now, heartbeat_at=now
                )
            ).rowcount
            return execution_id if claimed == 1 else None

    def release(self, execution_id: int, holder: str) -> bool:
        """Hand a run ``holder`` holds back to the queue, without its partial rows."""
        with db.write_tx(self.engine) as connection:
            released = _back_to_queue(connection, owned_by(execution_id, holder), execution_id)
        if released:
            log.info("run %s handed back to the queue", execution_id)
        return released

    def beat(self, held: dict[str, list[int]]) -> set[int]:
        """Beat the heartbeat of runs still held (holder → run ids); return those asked
        to cancel."""
        ids = [i for owned in held.values() for i in owned]
        with db.write_tx(self.engine) as connection:
            now = db.utcnow()
            for holder, owned in held.items():
                connection.execute(
                    executions.update()
                    .where(
                        executions.c.id.in_(owned),
                        executions.c.status == RunStatus.RUNNING,
                        executions.c.worker_id == holder,
                    )
                    .values(heartbeat_at=now)
                )
            return set(
                connection.execute(
                    sa.select(executions.c.id).where(
                        executions.c.id.in_(ids), executions.c.cancel_requested.is_(True)
                    )
                ).scalars()
            )

    def recover_stale(self) -> list[int]:
        """End or re-queue (once) the runs whose process stopped beating their heartbeat.

        A run someone started to watch ("run now") ends failed rather than coming back
        in the background behind their back; a queued job is re-queued once.
        """
        cutoff = db.utcnow() - dt.timedelta(seconds=self.settings.heartbeat_timeout_s)
        with db.read_tx(self.engine) as connection:
            rows = connection.execute(
                sa.select(
                    executions.c.id,
                    executions.c.mode,
                    executions.c.requeue_count,
                    executions.c.cancel_requested,
                ).where(_stale(cutoff))
            ).all()
        # One short transaction per run: the audit lock is never held across runs, so a
        # worker finishing one of them cannot deadlock with this pass.
        return [row.id for row in rows if self._recover_one(row, cutoff)]

    def _recover_one(self, row: sa.Row, cutoff: dt.datetime) -> bool:
        where = sa.and_(executions.c.id == row.id, _stale(cutoff))
        if row.cancel_requested:  # asked to stop before its worker died: don't revive it
            recovered = self._end(where, RunStatus.CANCELLED, "Cancelled before it finished.")
        elif row.mode == RunMode.NOW:
            recovered = self._end(where, RunStatus.FAILED, PROCESS_STOPPED)
        elif row.requeue_count < MAX_REQUEUES:
            with db.write_tx(self.engine) as connection:
                recovered = _back_to_queue(
                    connection, where, row.id, requeue_count=row.requeue_count + 1
                )
        else:
            recovered = self._end(where, RunStatus.FAILED, WORKER_LOST)
        if recovered:  # else a heartbeat landed meanwhile (PostgreSQL): the run is alive
            log.warning("run %s: its process stopped beating its heartbeat; recovered", row.id)
        return recovered

    def cancel(self, execution_id: int, actor: str) -> Execution:
        """Cancel a queued run at once, or ask the process running it to stop."""
        with db.write_tx(self.engine) as connection:
            # Lock the row first (PostgreSQL): otherwise a claim committing between the
            # read and the status-conditional UPDATE below makes the cancel match nothing.
            connection.execute(
                sa.select(executions.c.id).where(executions.c.id == execution_id).with_for_update()
            )
            execution = run_records.get(connection, execution_id)
            if execution.finished:
                raise ExecutionError(
                    f"Run {execution_id} has already finished ({execution.status}); "
                    "only queued or running runs can be cancelled."
                )
            values: dict[str, Any] = {"cancel_requested": True}
            if execution.status == RunStatus.PENDING:
                values.update(
                    status=RunStatus.CANCELLED,
                    finished_at=db.utcnow(),
                    error=f"Cancelled by {actor}.",
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
            cancelled = run_records.get(connection, execution_id)
        if cancelled.finished:
            self._announce(execution_id)
        return cancelled

    # -- finishing ------------------------------------------------------------------------

    def finish(self, job: Job, result: RunResult) -> bool:
        """Record how the holder's run ended; False when the run was no longer its."""
        values: dict[str, Any] = {
            "attempts": result.attempts,
            "execution_time_ms": result.elapsed_ms,
        }
        details: dict[str, Any] = {"attempts": result.attempts, "retries": result.retries}
        outcome = result.outcome
        if result.status == RunStatus.SUCCESS and outcome is not None:
            sample = outcome.first_row_sample
            values.update(
                row_count=outcome.row_count,
                rows_read=outcome.row_count,
                truncated=outcome.truncated,
                columns=db.dumps(outcome.columns),
                value=outcome.value,
                first_row_sample=db.dumps(sample) if sample is not None else None,
            )
            details.update(row_count=outcome.row_count, value=outcome.value)
        else:
            values.update(row_count=None, value=None)
        where = owned_by(job.execution_id, job.worker_id)
        finished = self._end(where, result.status, result.error, values, details)
        if not finished:
            log.warning("run %s was taken from this holder before it finished", job.execution_id)
        return finished

    def fail(self, execution_id: int, holder: str, message: str) -> bool:
        """End the holder's run as failed (it could not be loaded or recorded)."""
        return self._end(owned_by(execution_id, holder), RunStatus.FAILED, message)

    def _end(
        self,
        where: sa.ColumnElement[bool],
        status: RunStatus,
        error: str | None,
        values: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> bool:
        """The one way a run ends: final status, rows kept only on success, and the
        EXECUTE audit entry, in one transaction; then the hooks."""
        with db.write_tx(self.engine) as connection:
            run = connection.execute(
                sa.select(
                    executions.c.id,
                    executions.c.kpi_id,
                    executions.c.kpi_version,
                    executions.c.params,
                    executions.c.requested_by,
                    executions.c.attempts,
                )
                .where(where)
                .with_for_update()
            ).first()
            if run is None:
                return False
            now = db.utcnow()
            final = {"attempts": max(run.attempts, 1), **(values or {})}
            final.update(status=status, error=error, finished_at=now, heartbeat_at=now)
            connection.execute(executions.update().where(where).values(**final))
            if status != RunStatus.SUCCESS:
                results.delete_rows(connection, run.id)
            facts = {"version": run.kpi_version, "params": db.loads(run.params) or {}}
            if status != RunStatus.SUCCESS:
                facts["error"] = error
            audit.append_run(
                connection,
                actor=run.requested_by,
                kpi_id=run.kpi_id,
                execution_id=run.id,
                details={**facts, "status": status, **(details or {})},
            )
        self._announce(run.id)
        return True


def _back_to_queue(
    connection: sa.engine.Connection,
    where: sa.ColumnElement[bool],
    execution_id: int,
    requeue_count: int | None = None,
) -> bool:
    """The one way a run goes back to ``pending``: no holder, no progress, no rows."""
    values: dict[str, Any] = dict(
        status=RunStatus.PENDING, worker_id=None, started_at=None, heartbeat_at=None, rows_read=0
    )
    if requeue_count is not None:
        values["requeue_count"] = requeue_count
    if connection.execute(executions.update().where(where).values(**values)).rowcount != 1:
        return False
    results.delete_rows(connection, execution_id)
    return True
