"""``KPIStore``: the one public face of kpi_store.

Pages, the CLI and workers call only this class. It owns the store engine and the
read-only data-source engines, and delegates each concern to its module.
"""

from __future__ import annotations

import datetime as dt
import logging
import pathlib
from collections.abc import Iterable
from typing import Any, Literal

from . import (
    audit,
    db,
    definitions,
    integrity,
    keys,
    notifications,
    result_views,
    series,
    versions,
)
from . import datasources as sources
from .access import Guard, allowed, unguarded, visible_kpis
from .config import Settings
from .errors import NotFoundError
from .export_links import ExportTokens
from .heartbeat import ActiveRuns
from .models import (
    KPI,
    AuditCheckpoint,
    AuditEntry,
    AuditVerification,
    Column,
    DataSource,
    KPISpec,
    KPIVersion,
    VersionDiff,
)
from .querying import preview_rows
from .queue import JobQueue, process_worker_id
from .runner import Runner
from .runs import RunLedger
from .source_schema import TableInfo, read_schema
from .store_alerts import AlertDesk
from .store_diff import DiffDesk
from .store_notifications import NotificationDesk
from .store_people import PeopleAdmin
from .store_results import ResultsDesk
from .store_retention import RetentionDesk
from .store_runs import RunDesk
from .store_schedules import ScheduleDesk
from .store_series import SeriesDesk
from .store_story import StoryDesk
from .store_views import PageViews
from .validation import bind_parameters, checked_actor
from .vocabulary import KPIStatus, Role

log = logging.getLogger(__name__)


class KPIStore(
    RunDesk,
    PageViews,
    ResultsDesk,
    DiffDesk,
    PeopleAdmin,
    SeriesDesk,
    StoryDesk,
    ScheduleDesk,
    AlertDesk,
    NotificationDesk,
    RetentionDesk,
):
    """KPI definitions, their versions and runs, stored in one SQL database.

    ``KPIStore()`` opens the database named by ``KPI_STORE_URL`` (default
    ``sqlite:///data/kpi_store.db``), creating or upgrading its schema.

    With ``KPI_AUTH=oidc`` every method checks its ``actor`` (an email) against the
    people and roles in the store (``access.py``); reads take ``actor=`` too.
    """

    def __init__(self, url: str | None = None, settings: Settings | None = None):
        base = settings or Settings.from_env()
        self.settings = base if url is None else base.replace(url=url)
        self.url = self.settings.url
        self.engine = db.create_store_engine(self.url)
        db.migrate(self.engine)
        self._key = keys.load(self.settings)
        keys.attach(self.engine, self._key)
        notifications.attach(self.engine, self.settings)
        integrity.key_the_chain(self.engine, self._key)
        sources.seal_credentials(self.engine, self._key)
        self.source_folders = sources.SourceFolders.from_settings(self.settings)
        self.source_engines = sources.SourceEngines(self.source_folders)
        self._guard = Guard(self.engine, self.settings)
        self.ledger = RunLedger(self.engine, self.settings)
        self.runner = Runner(self.source_engines, self.settings)
        self.active_runs = ActiveRuns(self.ledger, self.settings.heartbeat_interval_s)
        self.queue = JobQueue(self.ledger, self.active_runs, self._run_held)
        self._watch_alerts()  # rules evaluate each run this process ends
        self.checkpoints = integrity.CheckpointWriter(
            self.engine, self._key, keys.checkpoint_file(self.settings)
        )
        self._export_tokens = ExportTokens()
        self._view_builder = result_views.ViewBuilder(self.engine)
        self._now_worker_id = process_worker_id("now")
        # A run whose process died must not stay "running" when no worker is around.
        self.ledger.recover_stale()

    @unguarded("releases this process's connections; touches no data")
    def close(self) -> None:
        """Release every pooled connection (the store can be reopened later)."""
        self.active_runs.close()
        self._view_builder.close()
        self.source_engines.dispose()
        self.engine.dispose()

    def __enter__(self) -> KPIStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KPIStore({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- data sources ---------------------------------------------------------------

    @allowed(Role.ADMIN)
    def add_data_source(self, name: str, url: str, actor: str) -> DataSource:
        """Register a data source after proving a connection to it works."""
        return sources.add(self.engine, name, url, _actor(actor), self.source_folders)

    @allowed(Role.ADMIN)
    def remove_data_source(self, name: str, actor: str) -> None:
        """Unregister a data source no KPI uses."""
        sources.remove(self.engine, name, _actor(actor))

    @allowed(Role.VIEWER)
    def data_sources(self, *, actor: str | None = None) -> list[DataSource]:
        """The data sources the actor may use."""
        visible = self._guard.sources(actor, "data_sources")
        with db.read_tx(self.engine) as connection:
            return [s for s in sources.all_sources(connection) if _sees(visible, s.name)]

    @allowed(Role.VIEWER, source="name")
    def data_source(self, name: str, *, actor: str | None = None) -> DataSource:
        with db.read_tx(self.engine) as connection:
            return sources.get(connection, name)

    @allowed(Role.EDITOR, source="data_source")
    def source_schema(self, data_source: str, *, actor: str | None = None) -> list[TableInfo]:
        """The source's tables and views with their columns and types, and row counts
        where cheap (``source_schema.py``), read through its read-only engine. Editors'
        (they write the SQL); no row is read but for a count."""
        with db.read_tx(self.engine) as connection:
            url = sources.connect_url(connection, data_source)
        return read_schema(self.source_engines.get(url))

    # -- definitions ----------------------------------------------------------------

    @allowed(Role.EDITOR, spec="spec")
    def validate_kpi(self, spec: KPISpec | dict[str, Any], *, actor: str | None = None) -> KPISpec:
        """Every check ``create_kpi`` makes, without writing anything."""
        with db.read_tx(self.engine) as connection:
            return definitions.validate_spec(connection, spec)

    @allowed(Role.EDITOR, spec="spec")
    def create_kpi(self, spec: KPISpec | dict[str, Any], actor: str) -> KPI:
        engines = self.source_engines  # the value column is checked against the result
        return definitions.create(self.engine, spec, _actor(actor), source_engines=engines)

    @allowed(Role.EDITOR, kpi="kpi_id", spec="changes")
    def update_kpi(
        self,
        kpi_id: int,
        changes: KPISpec | dict[str, Any],
        actor: str,
        expected_version: int,
        note: str = "",
    ) -> KPI:
        """Save a new version; raises VersionConflictError if ``expected_version`` is stale."""
        official_before = self._official_key(kpi_id)
        saved = definitions.update(
            self.engine,
            kpi_id,
            changes,
            _actor(actor),
            expected_version,
            note,
            source_engines=self.source_engines,
        )
        self._reset_alerts_for_sql(kpi_id, _actor(actor), official_before)
        return saved

    def _official_key(self, kpi_id: int) -> str | None:
        """The KPI's official series key now (None when it has none, or no such KPI)."""
        with db.read_tx(self.engine) as connection:
            try:
                return series.official_key(definitions.get(connection, kpi_id))
            except NotFoundError:
                return None

    @allowed(Role.EDITOR, kpi="kpi_id")
    def archive_kpi(self, kpi_id: int, actor: str) -> KPI:
        return definitions.set_status(self.engine, kpi_id, _actor(actor), KPIStatus.ARCHIVED)

    @allowed(Role.EDITOR, kpi="kpi_id")
    def unarchive_kpi(self, kpi_id: int, actor: str) -> KPI:
        return definitions.set_status(self.engine, kpi_id, _actor(actor), KPIStatus.ACTIVE)

    @allowed(Role.ADMIN, kpi="kpi_id")
    def delete_kpi(self, kpi_id: int, actor: str) -> None:
        """Delete a KPI with its versions and runs; its audit entries stay."""
        definitions.delete(self.engine, kpi_id, _actor(actor))

    @allowed(Role.VIEWER, kpi="kpi_id")
    def get_kpi(self, kpi_id: int, version: int | None = None, *, actor: str | None = None) -> KPI:
        with db.read_tx(self.engine) as connection:
            return definitions.get(connection, kpi_id, version)

    @allowed(Role.VIEWER)
    def list_kpis(
        self,
        search: str | None = None,
        tag: str | None = None,
        include_archived: bool = False,
        *,
        actor: str | None = None,
    ) -> list[KPI]:
        """KPIs matching the search and tag, on the data sources the actor may use."""
        visible = self._guard.sources(actor, "list_kpis")
        with db.read_tx(self.engine) as connection:
            found = definitions.list_kpis(connection, search, tag, include_archived)
        return [k for k in found if _sees(visible, k.data_source)]

    @allowed(Role.VIEWER, kpi="kpi_id")
    def kpi_versions(self, kpi_id: int, *, actor: str | None = None) -> list[KPIVersion]:
        """Every saved version, newest first."""
        with db.read_tx(self.engine) as connection:
            return versions.all_versions(connection, kpi_id)

    @allowed(Role.VIEWER, kpi="kpi_id")
    def diff_versions(
        self, kpi_id: int, a: int, b: int, *, actor: str | None = None
    ) -> VersionDiff:
        with db.read_tx(self.engine) as connection:
            return versions.diff(connection, kpi_id, a, b)

    @allowed(Role.EDITOR, kpi="kpi_id")
    def restore_version(self, kpi_id: int, version: int, actor: str) -> KPI:
        """Save a new version equal to ``version``."""
        official_before = self._official_key(kpi_id)
        restored = definitions.restore(self.engine, kpi_id, version, _actor(actor))
        self._reset_alerts_for_sql(kpi_id, _actor(actor), official_before)
        return restored

    # -- previews -------------------------------------------------------------------------

    @allowed(Role.EDITOR, source="data_source")
    def preview_query(
        self,
        data_source: str,
        sql: str,
        parameters: Iterable[Any] = (),
        params: dict[str, Any] | None = None,
        limit: int = 20,
        timeout_s: float = 10.0,
        *,
        actor: str,
    ) -> tuple[list[Column], list[list[Any]]]:
        """Validate and run a draft query read-only; return its first rows, store none.

        Recorded in the audit log (PREVIEW) like every other read of a source by a person.
        """
        actor = _actor(actor)
        draft = {
            "name": "preview",
            "data_source": data_source,
            "sql": sql,
            "parameters": list(parameters),
        }
        with db.read_tx(self.engine) as connection:
            spec = definitions.validate_spec(connection, draft)
        bound = bind_parameters(spec, params)
        with db.read_tx(self.engine) as connection:
            engine = self.source_engines.get(sources.connect_url(connection, data_source))
        details = {"data_source": data_source, "sql": spec.sql, "params": bound.json}
        audit.record(self.engine, actor=actor, action=audit.PREVIEW, details=details)
        return preview_rows(engine, spec.sql, bound, limit, timeout_s, self.settings)

    # -- demo and uploads -----------------------------------------------------------

    @unguarded("a path from the settings; reads nothing")
    def demo_warehouse_path(self) -> pathlib.Path:
        """Where the demo warehouse lives: the first allowed data-source folder."""
        return self.source_folders.default / "demo_warehouse.db"

    @allowed(Role.ADMIN)
    def install_demo(self, actor: str = "demo") -> list[KPI]:
        """Create the demo warehouse, register it as ``demo`` and add the sample KPIs.

        Idempotent: what exists already is left as it is. Returns the KPIs it added.
        """
        from .demo import install

        return install(self, _actor(actor))

    @allowed(Role.ADMIN, source="data_source")
    def import_csv(
        self, data_source: str, table: str, file: Any, actor: str, replace: bool = False
    ) -> int:
        """Load a CSV file into a new table of a local SQLite data source; ``replace``
        drops an existing table of that name first (in the same transaction)."""
        from .uploads import import_csv

        with db.read_tx(self.engine) as connection:
            source = sources.get(connection, data_source)
        return import_csv(
            self.engine, self.source_folders, source, table, file, _actor(actor), replace=replace
        )

    # -- audit ----------------------------------------------------------------------

    @allowed(Role.VIEWER, kpi="kpi_id")
    def audit_log(
        self,
        kpi_id: int | None = None,
        person: str | None = None,
        action: str | None = None,
        since: dt.datetime | dt.date | None = None,
        until: dt.datetime | dt.date | None = None,
        limit: int | None = 100,
        *,
        actor: str | None = None,
    ) -> list[AuditEntry]:
        """Audit entries matching every filter given, newest first. ``person`` finds
        people by any part of their email or name, in any case; ``actor`` is who asks.

        Below admin, only entries about KPIs the asker may see are listed."""
        asker = self._guard.principal(actor, "audit_log")
        kpis = None if asker.role == Role.ADMIN else visible_kpis(asker.sources)
        with db.read_tx(self.engine) as connection:
            return audit.entries(
                connection,
                kpi_id=kpi_id,
                person=person,
                action=action,
                since=since,
                until=until,
                limit=limit,
                kpis=kpis,
                kpi_entries_only=asker.role != Role.ADMIN,
            )

    @allowed(Role.ADMIN)
    def verify_audit(
        self,
        checkpoint: AuditCheckpoint | Literal["file"] | None = "file",
        *,
        actor: str | None = None,
    ) -> AuditVerification:
        """Check the signed audit chain (edits, removed entries), the current definitions
        against their history and audit trail, and the chain's length against a signed
        checkpoint: by default the newest in ``KPI_AUDIT_CHECKPOINT_FILE``, if any."""
        if checkpoint == "file":
            checkpoint = integrity.newest_checkpoint(self.checkpoints.path)
        with db.read_tx(self.engine) as connection:
            return integrity.verify(connection, self._key, checkpoint)

    @allowed(Role.ADMIN)
    def audit_checkpoint(self, *, actor: str | None = None) -> AuditCheckpoint:
        """The audit chain's length and newest hash, signed: keep it outside the store."""
        with db.read_tx(self.engine) as connection:
            return integrity.make_checkpoint(connection, self._key)


_actor = checked_actor  # who acts: stripped, refused (never cut) when missing or not text


def _sees(visible: frozenset[str] | None, data_source: str) -> bool:
    return visible is None or data_source in visible
