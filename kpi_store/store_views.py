"""The part of ``KPIStore`` that hands pages what they used to compute themselves.

A mixin of the one facade, kept apart so each file stays readable; the rules themselves
are plain functions in ``views.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from . import audit, db, results, run_records
from .access import Guard, Rule, allowed, unguarded, visible_kpis
from .errors import NotFoundError
from .export_links import ExportGrant, ExportTokens
from .models import KPI, AuditEntry, DataSource, Execution, ResultPage
from .validation import checked_actor
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
    """Exports (each audited with its actor), single-use links that stream a whole
    result, and what pages used to compute: runs by id, RAG counts, page counts, upload
    targets, batch progress, the job board."""

    if TYPE_CHECKING:
        engine: sa.engine.Engine
        _export_tokens: ExportTokens
        _guard: Guard

        def _execution(self, execution_id: int) -> Execution: ...

        def data_sources(self, *, actor: str | None = None) -> list[DataSource]: ...

        def result_page(
            self, execution_id: int, page: int, page_size: int, *, actor: str | None = None
        ) -> ResultPage: ...

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
    def rag_counts(self, kpis: Iterable[KPI], recent: dict[int, list[Execution]]) -> RagCounts:
        """On / near / off target and never run, from ``latest_runs`` of the same KPIs."""
        return rag_counts(kpis, recent)

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

    @allowed(Role.RUNNER, run="execution_id")
    def export_link(self, execution_id: int, actor: str, excel: bool = False) -> ExportGrant:
        """A single-use token, valid for a few minutes, to download every row of a
        successful run as CSV over HTTP (``open_export``). Nothing is exported yet."""
        actor = checked_actor(actor)
        results.check_exportable(self._execution(execution_id))
        return self._export_tokens.issue(execution_id, actor, excel)

    @unguarded("the token's person is checked as a runner when it is redeemed")
    def open_export(self, token: str) -> tuple[ExportGrant, Iterable[str]]:
        """Redeem a download token: the EXPORT audit entry is written (with the name of
        the person the link was made for), then the CSV is returned as text chunks of a
        few thousand rows, read as they are sent. Raises NotFoundError for a token that
        is unknown, used or expired."""
        grant = self._export_tokens.redeem(token)
        if grant is None:
            raise NotFoundError("This download link has expired or was used already.")
        if self._guard.settings.auth_on:
            arguments = {"actor": grant.actor, "execution_id": grant.execution_id}
            self._guard.check(Rule(Role.RUNNER, run="execution_id"), "open_export", arguments)
        execution = self._execution(grant.execution_id)
        chunks = results.csv_chunks(self.engine, execution, excel=grant.excel)
        details = {"execution_id": execution.id, "rows": execution.row_count or 0}
        self._exported(grant.actor, execution, {**details, "excel": grant.excel, "via": "link"})
        return grant, chunks

    @allowed(Role.RUNNER, run="execution_id")
    def export_csv(
        self,
        execution_id: int,
        dest: str | os.PathLike[str] | IO[str] | IO[bytes],
        actor: str,
        excel: bool = False,
    ) -> int:
        """Stream every row of a run to ``dest`` as CSV; returns the number of rows."""
        actor = checked_actor(actor)
        execution = self._execution(execution_id)
        count = results.write_csv(self.engine, execution, dest, excel=excel)
        details = {"execution_id": execution_id, "rows": count, "excel": excel}
        self._exported(actor, execution, details)
        return count

    @allowed(Role.RUNNER, run="execution_id")
    def page_csv(
        self,
        execution_id: int,
        page: int = 1,
        page_size: int = 50,
        excel: bool = False,
        *,
        actor: str,
    ) -> bytes:
        """One page of a run's rows as CSV bytes, quoted and escaped like ``export_csv``."""
        actor = checked_actor(actor)
        result = self.result_page(execution_id, page, page_size, actor=actor)
        data = results.csv_bytes([c.name for c in result.columns], result.rows, excel)
        details = {"execution_id": execution_id, "rows": len(result.rows), "excel": excel}
        execution = self._execution(execution_id)
        self._exported(actor, execution, {**details, "page": page})
        return data

    def _exported(self, actor: str, execution: Execution, details: dict[str, Any]) -> None:
        entity = f"execution:{execution.id}"
        audit.record(
            self.engine,
            actor=actor,
            action=audit.EXPORT,
            kpi_id=execution.kpi_id,
            entity=entity,
            details=details,
        )

    @allowed(Role.ADMIN)
    def audit_csv(self, entries: Iterable[AuditEntry], excel: bool = True, *, actor: str) -> bytes:
        """Audit entries (e.g. a filtered ``audit_log``) as CSV bytes; the export is audited."""
        actor = checked_actor(actor)
        rows = audit.csv_rows(entries)
        data = results.csv_bytes(audit.CSV_HEADER, rows, excel)
        details = {"rows": len(rows), "excel": excel}
        audit.record(
            self.engine, actor=actor, action=audit.EXPORT, entity="audit_log", details=details
        )
        return data
