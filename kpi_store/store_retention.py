"""The part of ``KPIStore`` for Retention: removing old runs' stored rows, keeping their
records (``retention.py``), and what the store holds (``retention_space.py``)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from . import db, retention, retention_space
from .access import allowed, unguarded
from .errors import ValidationError
from .models import Execution
from .retention import Policy, PruneReport
from .retention_space import StorageReport
from .validation import checked_actor
from .vocabulary import Role

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .config import Settings
    from .result_views import ViewBuilder

RETENTION_ACTOR = "retention"  # who the workers' prune is recorded as


class RetentionDesk:
    """Retention: ``prune``, the workers' ``prune_chore``, ``storage_report``, and why a
    pruned run has no rows (``rows_removed_note``)."""

    if TYPE_CHECKING:
        engine: sa.engine.Engine
        settings: Settings
        _view_builder: ViewBuilder

        def _execution(self, execution_id: int) -> Execution: ...

    @allowed(Role.ADMIN)
    def prune(
        self,
        *,
        actor: str,
        dry_run: bool = False,
        now: dt.datetime | None = None,
        vacuum: bool = False,
    ) -> PruneReport:
        """Remove the stored rows of runs past ``KPI_KEEP_ROWS_DAYS`` (as of ``now``,
        default the present) or beyond the newest ``KPI_KEEP_ROWS_RUNS`` of their KPI and
        parameter set, keeping the newest official run's; records, values, parameters
        and audit stay. Audited as one PRUNE entry. ``dry_run`` only says what would go;
        ``vacuum`` then runs a full VACUUM (SQLite: switches an old store to incremental
        auto-vacuum)."""
        actor = checked_actor(actor)
        if dry_run and vacuum:
            message = "A dry run changes nothing, so it cannot vacuum: leave out one of them."
            raise ValidationError(message, {"vacuum": message})
        report = retention.prune(
            self.engine, self._policy(now), actor, dry_run=dry_run, vacuum=vacuum
        )
        if not dry_run:
            self._forget_views(report)
        return report

    @unguarded("the workers' chore: acts as 'retention' within the limits the settings set")
    def prune_chore(self) -> PruneReport | None:
        """What a worker does every ``KPI_PRUNE_INTERVAL_S``: prune by the settings' limits
        as ``retention``; nothing (None) when neither limit is set."""
        policy = self._policy(None)
        if not policy.limited:
            return None
        report = retention.prune(self.engine, policy, RETENTION_ACTOR)
        self._forget_views(report)
        return report

    @allowed(Role.ADMIN)
    def storage_report(self, *, actor: str | None = None) -> StorageReport:
        """The store's size, its rows and runs per KPI (kept and removed), its biggest runs."""
        policy = self._policy(None)
        with db.read_tx(self.engine) as connection:
            return retention_space.storage_report(
                connection, policy.keep_days, policy.keep_runs, policy.describe()
            )

    @allowed(Role.VIEWER, run="execution_id")
    def rows_removed_note(self, execution_id: int, *, actor: str | None = None) -> str | None:
        """Why a run has no rows to show: when and by which limit retention removed them
        (None while it keeps them)."""
        execution = self._execution(execution_id)
        if execution.rows_pruned_at is None:
            return None
        with db.read_tx(self.engine) as connection:
            return str(retention.removed_error(connection, execution))

    def _check_rows(self, execution: Execution) -> None:
        """Raise ``RowsRemovedError`` (naming the limit) for a pruned run."""
        if execution.rows_pruned_at is not None:
            with db.read_tx(self.engine) as connection:
                raise retention.removed_error(connection, execution)

    def _policy(self, now: Any) -> Policy:
        if now is None:
            as_of = db.utcnow()
        elif isinstance(now, dt.datetime):
            as_of = now.astimezone(dt.UTC).replace(tzinfo=None) if now.tzinfo else now
        else:
            message = f"now must be a date and time (UTC); got {now!r}."
            raise ValidationError(message, {"now": message})
        settings = self.settings
        return Policy(max(0, settings.keep_rows_days), max(0, settings.keep_rows_runs), as_of)

    def _forget_views(self, report: PruneReport) -> None:
        for run in report.runs:
            self._view_builder.forget(run.execution_id)
