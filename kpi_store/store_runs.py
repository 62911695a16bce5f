"""The part of ``KPIStore`` that runs KPIs: now, in the background, many at once; cancel;
and the runs' records.

A mixin of the one facade, kept apart so each file stays readable; a run's life is owned
by ``runs.py`` (``RunLedger``), running one by ``execution.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import batches, db, run_records
from .access import Guard, allowed, unguarded, visible_kpis
from .execution import run_held
from .heartbeat import ActiveRuns
from .models import BatchResult, Execution
from .queue import new_holder
from .runner import Runner
from .runs import FinishedHook, RunLedger
from .validation import checked_actor as _actor
from .vocabulary import Role, RunMode

if TYPE_CHECKING:
    import sqlalchemy as sa


class RunDesk:
    """Running KPIs and reading their runs; every run's life goes through the ledger."""

    if TYPE_CHECKING:
        engine: sa.engine.Engine
        ledger: RunLedger
        runner: Runner
        active_runs: ActiveRuns
        _guard: Guard
        _now_worker_id: str

    @unguarded("registers code of the process that holds the store; touches no data")
    def on_run_finished(self, hook: FinishedHook) -> FinishedHook:
        """Call ``hook(execution)`` whenever a run this process ends has been recorded
        (success or not, by a runner, a cancel or recovery). A failing hook is logged."""
        return self.ledger.on_finished(hook)

    @allowed(Role.RUNNER, kpi="kpi_id")
    def execute(
        self,
        kpi_id: int,
        params: dict[str, Any] | None = None,
        actor: str = "",
        timeout_s: float | None = None,
    ) -> Execution:
        """Run a KPI now, in this thread, and return the finished run.

        Bad input raises ValidationError before anything runs; a failing, timed-out or
        cancelled query does not raise: the returned run says what happened.
        """
        holder = new_holder(self._now_worker_id)
        execution_id = self.ledger.create(
            kpi_id, params, _actor(actor), mode=RunMode.NOW, holder=holder, timeout_s=timeout_s
        )
        self._run_held(execution_id, holder)
        return self._execution(execution_id)

    @allowed(Role.RUNNER, kpis="kpi_ids")
    def execute_batch(
        self,
        kpi_ids: Iterable[int],
        params: dict[str, Any] | None = None,
        actor: str = "",
        max_parallel: int = 4,
    ) -> BatchResult:
        """Run several KPIs now, a few at a time; one failure never stops the others.

        ``params`` apply to each KPI that declares them; others ignore them.
        """
        batch = self._record_batch(kpi_ids, params, actor, RunMode.NOW)
        batches.run_all(batch, self._run_held, max_parallel)
        return batches.finished_result(batch, self._runs_of(batch))

    @allowed(Role.RUNNER, kpi="kpi_id")
    def submit(
        self, kpi_id: int, params: dict[str, Any] | None = None, actor: str = ""
    ) -> Execution:
        """Queue a KPI to run in the background; returns the pending run."""
        execution_id = self.ledger.create(kpi_id, params, _actor(actor), mode=RunMode.BACKGROUND)
        return self._execution(execution_id)

    @allowed(Role.RUNNER, kpis="kpi_ids")
    def submit_batch(
        self, kpi_ids: Iterable[int], params: dict[str, Any] | None = None, actor: str = ""
    ) -> BatchResult:
        """Queue several KPIs under one batch id; ``successful`` counts the queued runs."""
        batch = self._record_batch(kpi_ids, params, actor, RunMode.BACKGROUND)
        return batches.queued_result(batch, self._runs_of(batch))

    def _record_batch(
        self, kpi_ids: Iterable[int], params: dict[str, Any] | None, actor: str, mode: RunMode
    ) -> batches.RecordedBatch:
        def holder() -> str:
            return new_holder(self._now_worker_id)

        return batches.record(self.ledger, kpi_ids, params, _actor(actor), mode, holder)

    def _runs_of(self, batch: batches.RecordedBatch) -> list[Execution]:
        with db.read_tx(self.engine) as connection:
            return run_records.many(connection, [eid for eid, _ in batch.runs])

    def _run_held(self, execution_id: int, holder: str) -> None:
        admit = self._guard.admit_run
        run_held(self.ledger, self.runner, self.active_runs, execution_id, holder, admit)

    @allowed(Role.RUNNER, run="execution_id", own_run=True)
    def cancel(self, execution_id: int, actor: str) -> Execution:
        """Cancel a queued run at once, or stop a running one within about a second."""
        execution = self.ledger.cancel(execution_id, _actor(actor))
        control = self.active_runs.control(execution_id)
        if control is not None:
            control.cancel_event.set()
        return execution

    @allowed(Role.VIEWER, run="execution_id")
    def execution(self, execution_id: int, *, actor: str | None = None) -> Execution:
        return self._execution(execution_id)

    def _execution(self, execution_id: int) -> Execution:
        with db.read_tx(self.engine) as connection:
            return run_records.get(connection, execution_id)

    @allowed(Role.VIEWER, kpi="kpi_id")
    def executions(
        self,
        kpi_id: int | None = None,
        status: str | None = None,
        limit: int | None = 100,
        batch_id: str | None = None,
        requested_by: str | None = None,
        *,
        actor: str | None = None,
    ) -> list[Execution]:
        """Runs matching every filter given, newest first (``requested_by``: "my runs")."""
        kpis = visible_kpis(self._guard.sources(actor, "executions"))
        with db.read_tx(self.engine) as connection:
            return run_records.listed(
                connection, kpi_id, status, limit, batch_id, requested_by, kpis
            )

    @allowed(Role.VIEWER)
    def latest_runs(
        self,
        kpi_ids: Iterable[int] | None = None,
        per_kpi: int = 20,
        *,
        actor: str | None = None,
    ) -> dict[int, list[Execution]]:
        """The newest ``per_kpi`` runs of each KPI (newest first), in one query."""
        kpis = visible_kpis(self._guard.sources(actor, "latest_runs"))
        with db.read_tx(self.engine) as connection:
            return run_records.latest(connection, kpi_ids, per_kpi, kpis)
