"""A KPI's version history: one immutable entry per version, and diffs between two."""

from __future__ import annotations

import difflib

import sqlalchemy as sa

from .definitions import changed_fields, require_kpi, to_version, version_entry
from .models import FieldDiff, KPIVersion, VersionDiff
from .schema import kpi_definition_history as history


def all_versions(connection: sa.engine.Connection, kpi_id: int) -> list[KPIVersion]:
    """Every version of a KPI, newest first."""
    require_kpi(connection, kpi_id)
    rows = connection.execute(
        sa.select(history).where(history.c.kpi_id == kpi_id).order_by(history.c.version.desc())
    )
    return [to_version(row) for row in rows]


def diff(connection: sa.engine.Connection, kpi_id: int, a: int, b: int) -> VersionDiff:
    """Field-by-field differences from version ``a`` to version ``b``."""
    first, second = version_entry(connection, kpi_id, a), version_entry(connection, kpi_id, b)
    changes = [
        FieldDiff(field=name, before=change["before"], after=change["after"])
        for name, change in changed_fields(first.spec, second.spec).items()
    ]
    sql_diff = "\n".join(
        difflib.unified_diff(
            first.spec.sql.splitlines(),
            second.spec.sql.splitlines(),
            fromfile=f"version {a}",
            tofile=f"version {b}",
            lineterm="",
        )
    )
    return VersionDiff(kpi_id=kpi_id, version_a=a, version_b=b, changes=changes, sql_diff=sql_diff)
