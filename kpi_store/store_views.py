"""The part of ``KPIStore`` that hands pages what they used to compute themselves.

A mixin of the one facade, kept apart so each file stays readable; the rules themselves
are plain functions in ``views.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import db, run_records
from .access import Guard, allowed, unguarded, visible_kpis
from .models import KPI, DataSource, Execution
from .story_records import Headline
from .views import (
    BatchProgress,
    JobBoard,
    RagCounts,
    Rerun,
    accepts_uploads,
    failed_rerun,
    job_board,
    rag_counts,
    total_pages,
)
from .vocabulary import ACTIVE_STATUSES, Role, RunStatus

if TYPE_CHECKING:
    import sqlalchemy as sa


class PageViews:
    """What pages used to compute: runs by id, RAG counts, page counts, upload targets,
    batch progress, the job board."""

    if TYPE_CHECKING:
        engine: sa.engine.Engine
        _guard: Guard

        def data_sources(self, *, actor: str | None = None) -> list[DataSource]: ...

    @allowed(Role.VIEWER)
    def runs(self, execution_ids: Iterable[int], *, actor: str | None = None) -> list[Execution]:
        """The runs with these ids that exist and the actor may see, in the order asked."""
        kpis = visible_kpis(self._guard.sources(actor, "runs"))
        with db.read_tx(self.engine) as connection:
            found = run_records.many(connection, list(execution_ids))
            if kpis is None:
                return found
            visible: set[int] = set(connection.execute(kpis).scalars())
        return [r for r in found if r.kpi_id in visible]

    @unguarded("computes from what it is given; reads nothing")
    def rag_counts(self, kpis: Iterable[KPI], headlines: dict[int, Headline]) -> RagCounts:
        """On / near / off target, no data, no target and never run, from ``headlines``."""
        return rag_counts(kpis, headlines)

    @unguarded("computes from what it is given; reads nothing")
    def total_pages(self, execution: Execution, page_size: int) -> int:
        """How many pages of ``page_size`` rows a run's result has (at least one)."""
        return total_pages(execution.row_count, page_size)

    @allowed(Role.ADMIN)
    def upload_targets(self, *, actor: str | None = None) -> list[str]:
        """Names of the data sources a CSV file can be uploaded into."""
        return [s.name for s in self.data_sources(actor=actor) if accepts_uploads(s)]

    @allowed(Role.VIEWER)
    def batch_progress(self, batch_id: str, *, actor: str | None = None) -> BatchProgress:
        """Every run of a batch (by id) the actor may see and how far the batch got."""
        kpis = visible_kpis(self._guard.sources(actor, "batch_progress"))
        with db.read_tx(self.engine) as connection:
            runs = run_records.listed(connection, batch_id=batch_id, limit=None, kpis=kpis)
        return BatchProgress(batch_id=batch_id, runs=tuple(sorted(runs, key=lambda r: r.id)))

    @allowed(Role.VIEWER)
    def failed_rerun(self, batch_id: str, *, actor: str | None = None) -> Rerun:
        """The KPIs of a batch that did not succeed, with their parameters merged, to
        submit again (``submit_batch(rerun.kpi_ids, rerun.params)``)."""
        return failed_rerun(self.batch_progress(batch_id, actor=actor).runs)

    @allowed(Role.VIEWER)
    def job_board(
        self, limit: int = 100, recent: int = 10, *, actor: str | None = None
    ) -> JobBoard:
        """Queued and running runs, their expected row counts and the runs that finished
        last: three queries however many jobs there are (a monitor polls this)."""
        kpis = visible_kpis(self._guard.sources(actor, "job_board"))
        with db.read_tx(self.engine) as connection:
            active = run_records.listed(connection, status=ACTIVE_STATUSES, limit=limit, kpis=kpis)
            kpi_ids = {r.kpi_id for r in active if r.status == RunStatus.RUNNING}
            latest = run_records.latest(connection, kpi_ids, per_kpi=20) if kpi_ids else {}
            finished = run_records.listed(connection, limit=recent + len(active) + 5, kpis=kpis)
        return job_board(active, latest, finished, recent)
