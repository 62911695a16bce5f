"""``KPIStore``: the one public face of kpi_store.

Pages, the CLI and workers call only this class. It owns the store engine and the
read-only data-source engines, and delegates each concern to its module.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from . import audit, db, definitions
from . import datasources as sources
from .config import Settings
from .models import (
    KPI,
    AuditEntry,
    AuditVerification,
    DataSource,
    KPISpec,
    KPIVersion,
    VersionDiff,
)


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

    def close(self) -> None:
        """Release every pooled connection (the store can be reopened later)."""
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
        return sources.add(self.engine, self.source_engines, name, url, _actor(actor))

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


def _actor(actor: str) -> str:
    from .errors import ValidationError

    actor = (actor or "").strip()
    if not actor:
        raise ValidationError("Say who you are: every change records its author.", {"actor": "required"})
    return actor[:200]
