"""``KPIStore``: the one public face of kpi_store.

Pages, the CLI and workers call only this class. It owns the store engine and the
read-only data-source engines, and delegates each concern to its module.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import pathlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any

from . import audit, db, definitions, jobs, results
from . import datasources as sources
from .config import Settings
from .errors import KPIStoreError, ValidationError
from .execution import Runner, preview_rows
from .models import (
    KPI,
    NUL,
    NUL_MESSAGE,
    AuditEntry,
    AuditVerification,
    BatchError,
    BatchResult,
    Column,
    DataSource,
    Execution,
    KPISpec,
    KPIVersion,
    ResultPage,
    VersionDiff,
)
from .validation import bind_parameters

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class KPIStore:
    """KPI definitions, their versions and runs, stored in one SQL database.

    ``KPIStore()`` opens the database named by ``KPI_STORE_URL`` (default
    ``sqlite:///data/kpi_store.db``), creating or upgrading its schema.
    """

    def __init__(self, url: str | None = None, settings: Settings | None = None):
        base = settings or Settings.from_env()
        self.settings = base if url is None else Settings(**{**base.__dict__, "url": url})
        self.url = self.settings.url
        self.engine = db.create_store_engine(self.url)
        db.migrate(self.engine)
        self.source_engines = sources.SourceEngines()
        self.active_runs = jobs.ActiveRuns(self.engine)
        self.runner = Runner(self.engine, self.source_engines, self.settings)
        self._now_worker_id = jobs.process_worker_id("now")

    def close(self) -> None:
        """Release every pooled connection (the store can be reopened later)."""
        self.active_runs.close()
        self.source_engines.dispose()
        self.engine.dispose()

    def __enter__(self) -> KPIStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KPIStore({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- data sources ---------------------------------------------------------------

    def add_data_source(self, name: str, url: str, actor: str) -> DataSource:
        """Register a data source after proving a connection to it works."""
        return sources.add(self.engine, name, url, _actor(actor))

    def remove_data_source(self, name: str, actor: str) -> None:
        """Unregister a data source no KPI uses."""
        sources.remove(self.engine, name, _actor(actor))

    def data_sources(self) -> list[DataSource]:
        with db.read_tx(self.engine) as connection:
            return sources.all_sources(connection)

    def data_source(self, name: str) -> DataSource:
        with db.read_tx(self.engine) as connection:
            return sources.get(connection, name)

    # -- definitions ----------------------------------------------------------------

    def validate_kpi(self, spec: KPISpec | dict[str, Any]) -> KPISpec:
        """Every check ``create_kpi`` makes, without writing anything."""
        with db.read_tx(self.engine) as connection:
            return definitions.validate_spec(connection, spec)

    def create_kpi(self, spec: KPISpec | dict[str, Any], actor: str) -> KPI:
        return definitions.create(self.engine, spec, _actor(actor))

    def update_kpi(
        self,
        kpi_id: int,
        changes: KPISpec | dict[str, Any],
        actor: str,
        expected_version: int,
        note: str = "",
    ) -> KPI:
        """Save a new version; raises VersionConflictError if ``expected_version`` is stale."""
        return definitions.update(
            self.engine, kpi_id, changes, _actor(actor), expected_version, note
        )

    def archive_kpi(self, kpi_id: int, actor: str) -> KPI:
        return definitions.set_status(self.engine, kpi_id, _actor(actor), "archived")

    def unarchive_kpi(self, kpi_id: int, actor: str) -> KPI:
        return definitions.set_status(self.engine, kpi_id, _actor(actor), "active")

    def delete_kpi(self, kpi_id: int, actor: str) -> None:
        """Delete a KPI with its versions and runs; its audit entries stay."""
        definitions.delete(self.engine, kpi_id, _actor(actor))

    def get_kpi(self, kpi_id: int, version: int | None = None) -> KPI:
        with db.read_tx(self.engine) as connection:
            return definitions.get(connection, kpi_id, version)

    def list_kpis(
        self, search: str | None = None, tag: str | None = None, include_archived: bool = False
    ) -> list[KPI]:
        with db.read_tx(self.engine) as connection:
            return definitions.list_kpis(connection, search, tag, include_archived)

    def kpi_versions(self, kpi_id: int) -> list[KPIVersion]:
        """Every saved version, newest first."""
        with db.read_tx(self.engine) as connection:
            return definitions.versions(connection, kpi_id)

    def diff_versions(self, kpi_id: int, a: int, b: int) -> VersionDiff:
        with db.read_tx(self.engine) as connection:
            return definitions.diff(connection, kpi_id, a, b)

    def restore_version(self, kpi_id: int, version: int, actor: str) -> KPI:
        """Save a new version equal to ``version``."""
        return definitions.restore(self.engine, kpi_id, version, _actor(actor))

    # -- running ------------------------------------------------------------------------

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
        holder = jobs.new_holder(self._now_worker_id)
        execution_id = jobs.create_execution(
            self.engine,
            self.settings,
            kpi_id,
            params,
            _actor(actor),
            mode="now",
            worker_id=holder,
            timeout_s=timeout_s,
        )
        self.run_claimed(execution_id, holder)
        return self.execution(execution_id)

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
        kpi_ids = list(kpi_ids)
        batch_id, claims, errors = self._record_batch(kpi_ids, params, actor, mode="now")
        if claims:
            parallel = max(1, min(max_parallel, len(claims)))
            with ThreadPoolExecutor(max_workers=parallel) as pool:
                futures = [pool.submit(self.run_claimed, eid, holder) for eid, holder in claims]
            for future in futures:
                if future.exception() is not None:
                    log.error("a batch run ended with an unexpected error: %s", future.exception())
        runs = [self.execution(eid) for eid, _ in claims]
        for run in runs:
            if run.status != "success":
                errors.append(BatchError(kpi_id=run.kpi_id, message=run.error or run.status))
        successful = sum(run.status == "success" for run in runs)
        return BatchResult(
            batch_id=batch_id,
            total=len(kpi_ids),
            successful=successful,
            failed=len(kpi_ids) - successful,
            executions=runs,
            errors=errors,
        )

    def _params_for(self, kpi_id: int, params: dict[str, Any] | None) -> dict[str, Any] | None:
        if not params:
            return None
        declared = {p.name for p in self.get_kpi(kpi_id).parameters}
        return {k: v for k, v in params.items() if k in declared}

    def submit(
        self, kpi_id: int, params: dict[str, Any] | None = None, actor: str = ""
    ) -> Execution:
        """Queue a KPI to run in the background; returns the pending run."""
        execution_id = jobs.create_execution(
            self.engine, self.settings, kpi_id, params, _actor(actor), mode="background"
        )
        return self.execution(execution_id)

    def submit_batch(
        self, kpi_ids: Iterable[int], params: dict[str, Any] | None = None, actor: str = ""
    ) -> BatchResult:
        """Queue several KPIs under one batch id; ``successful`` counts the queued runs."""
        kpi_ids = list(kpi_ids)
        batch_id, claims, errors = self._record_batch(kpi_ids, params, actor, mode="background")
        queued = [self.execution(execution_id) for execution_id, _ in claims]
        return BatchResult(
            batch_id=batch_id,
            total=len(kpi_ids),
            successful=len(queued),
            failed=len(errors),
            executions=queued,
            errors=errors,
        )

    def _record_batch(
        self, kpi_ids: list[int], params: dict[str, Any] | None, actor: str, mode: str
    ) -> tuple[str, list[tuple[int, str | None]], list[BatchError]]:
        """Record one run per KPI under a new batch id: running for us when ``mode`` is
        "now" (each with its own holder token), else queued. Refusals become errors."""
        actor = _actor(actor)
        batch_id = jobs.new_batch_id()
        claims: list[tuple[int, str | None]] = []
        errors: list[BatchError] = []
        for kpi_id in kpi_ids:
            holder = jobs.new_holder(self._now_worker_id) if mode == "now" else None
            try:
                execution_id = jobs.create_execution(
                    self.engine,
                    self.settings,
                    kpi_id,
                    self._params_for(kpi_id, params),
                    actor,
                    mode=mode,
                    worker_id=holder,
                    batch_id=batch_id,
                )
            except KPIStoreError as error:
                errors.append(BatchError(kpi_id=kpi_id, message=str(error)))
                continue
            claims.append((execution_id, holder))
        return batch_id, claims, errors

    def run_claimed(self, execution_id: int, worker_id: str) -> None:
        """Run an execution already marked running for ``worker_id`` (used by workers)."""
        jobs.run_claimed(self.engine, self.runner, self.active_runs, execution_id, worker_id)

    def cancel(self, execution_id: int, actor: str) -> Execution:
        """Cancel a queued run at once, or stop a running one within about a second."""
        execution = jobs.request_cancel(self.engine, execution_id, _actor(actor))
        control = self.active_runs.control(execution_id)
        if control is not None:
            control.cancel_event.set()
        return execution

    def execution(self, execution_id: int) -> Execution:
        with db.read_tx(self.engine) as connection:
            return jobs.get_execution(connection, execution_id)

    def executions(
        self,
        kpi_id: int | None = None,
        status: str | None = None,
        limit: int | None = 100,
        batch_id: str | None = None,
    ) -> list[Execution]:
        """Runs matching every filter given, newest first."""
        with db.read_tx(self.engine) as connection:
            return jobs.list_executions(connection, kpi_id, status, limit, batch_id)

    def latest_runs(
        self, kpi_ids: Iterable[int] | None = None, per_kpi: int = 20
    ) -> dict[int, list[Execution]]:
        """The newest ``per_kpi`` runs of each KPI (newest first), in one query."""
        with db.read_tx(self.engine) as connection:
            return jobs.latest_runs(connection, kpi_ids, per_kpi)

    def preview_query(
        self,
        data_source: str,
        sql: str,
        parameters: Iterable[Any] = (),
        params: dict[str, Any] | None = None,
        limit: int = 20,
        timeout_s: float = 10.0,
    ) -> tuple[list[Column], list[list[Any]]]:
        """Validate and run a draft query read-only; return its first rows, store nothing."""
        spec = self.validate_kpi(
            {
                "name": "preview",
                "data_source": data_source,
                "sql": sql,
                "parameters": list(parameters),
            }
        )
        bound = bind_parameters(spec, params)
        engine = self.source_engines.get(self.data_source(data_source).url)
        return preview_rows(engine, spec.sql, bound, limit, timeout_s)

    # -- results --------------------------------------------------------------------

    def result_page(self, execution_id: int, page: int = 1, page_size: int = 50) -> ResultPage:
        """One page of a successful run's rows, fetched by row-number range."""
        with db.read_tx(self.engine) as connection:
            execution = jobs.get_execution(connection, execution_id)
            return results.page(connection, execution, page, page_size)

    def result_frame(self, execution_id: int, page: int = 1, page_size: int = 50) -> pd.DataFrame:
        """A page as a pandas DataFrame with dtypes from the column types."""
        return results.frame(self.result_page(execution_id, page, page_size))

    def export_csv(
        self,
        execution_id: int,
        dest: str | os.PathLike[str] | IO[str] | IO[bytes],
        actor: str,
        excel: bool = False,
    ) -> int:
        """Stream every row of a run to ``dest`` as CSV; returns the number of rows."""
        actor = _actor(actor)
        execution = self.execution(execution_id)
        count = results.write_csv(self.engine, execution, dest, excel=excel)
        with db.write_tx(self.engine) as connection:
            audit.append(
                connection,
                actor=actor,
                action=audit.EXPORT,
                kpi_id=execution.kpi_id,
                entity=f"execution:{execution_id}",
                details={"execution_id": execution_id, "rows": count, "excel": excel},
            )
        return count

    def page_csv(
        self, execution_id: int, page: int = 1, page_size: int = 50, excel: bool = False
    ) -> bytes:
        """One page of a run's rows as CSV bytes, quoted and escaped like ``export_csv``."""
        result = self.result_page(execution_id, page, page_size)
        return results.csv_bytes([c.name for c in result.columns], result.rows, excel)

    def audit_csv(self, entries: Iterable[AuditEntry], excel: bool = True) -> bytes:
        """Audit entries (e.g. a filtered ``audit_log``) as CSV bytes."""
        header = ["id", "occurred_at", "actor", "action", "kpi_id", "entity", "details"]
        rows = [
            [
                e.id,
                e.occurred_at.isoformat(),
                e.actor,
                e.action,
                e.kpi_id,
                e.entity,
                db.dumps(e.details),
            ]
            for e in entries
        ]
        return results.csv_bytes(header, rows, excel)

    # -- demo and uploads -----------------------------------------------------------

    def demo_warehouse_path(self) -> pathlib.Path:
        """Where the demo warehouse lives: beside a SQLite store, else under ./data."""
        if self.engine.dialect.name == "sqlite" and self.engine.url.database:
            return pathlib.Path(self.engine.url.database).resolve().parent / "demo_warehouse.db"
        return pathlib.Path("data/demo_warehouse.db").resolve()

    def install_demo(self, actor: str = "demo") -> list[KPI]:
        """Create the demo warehouse, register it as ``demo`` and add the sample KPIs.

        Idempotent: what exists already is left as it is. Returns the KPIs it added.
        """
        from .demo import install

        return install(self, _actor(actor))

    def import_csv(self, data_source: str, table: str, file: Any, actor: str) -> int:
        """Load a CSV file into a new table of a local SQLite data source."""
        from .uploads import import_csv

        return import_csv(self.engine, self.data_source(data_source), table, file, _actor(actor))

    # -- audit ----------------------------------------------------------------------

    def audit_log(
        self,
        kpi_id: int | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: dt.datetime | dt.date | None = None,
        until: dt.datetime | dt.date | None = None,
        limit: int | None = 100,
    ) -> list[AuditEntry]:
        """Audit entries matching every filter given, newest first."""
        with db.read_tx(self.engine) as connection:
            return audit.entries(
                connection,
                kpi_id=kpi_id,
                actor=actor,
                action=action,
                since=since,
                until=until,
                limit=limit,
            )

    def verify_audit(self) -> AuditVerification:
        """Recompute the audit hash chain and report the first entry that breaks it."""
        with db.read_tx(self.engine) as connection:
            return audit.verify(connection)

    # -- views for pages (rules pages used to compute themselves) ----------------------


def _actor(actor: str) -> str:
    actor = (actor or "").strip()
    if not actor:
        raise ValidationError(
            "Say who you are: every change records its author.", {"actor": "required"}
        )
    if NUL in actor:
        raise ValidationError(f"The actor name {NUL_MESSAGE}.", {"actor": NUL_MESSAGE})
    return actor[:200]
