"""The official number: series, periods, per-parameter targets.

- ``kpi_definitions``: ``official_params``, ``targets``, ``period`` (JSON) and
  ``breakdown_column``.
- ``kpi_execution_results``: ``series_key`` (the run's parameters without its period dates,
  hashed), ``period_start`` / ``period_end``, ``schedule_id`` (the schedule that queued it)
  and ``rows_pruned_at`` (when retention removed its stored rows). Existing runs get the
  key of all their parameters, which is what it is for a KPI without a period.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import hashlib

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _series_key(params_json: str) -> str:
    # Frozen copy of kpi_store.series.series_key for a KPI without a period.
    params = orjson.loads(params_json or "{}")
    canonical = orjson.dumps(params, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("kpi_definitions") as batch:
        batch.add_column(sa.Column("official_params", sa.Text))
        batch.add_column(sa.Column("targets", sa.Text))
        batch.add_column(sa.Column("period", sa.Text))
        batch.add_column(sa.Column("breakdown_column", sa.String(200)))
    with op.batch_alter_table("kpi_execution_results") as batch:
        batch.add_column(sa.Column("series_key", sa.String(64)))
        batch.add_column(sa.Column("period_start", sa.Date))
        batch.add_column(sa.Column("period_end", sa.Date))
        batch.add_column(sa.Column("schedule_id", sa.Integer))
        batch.add_column(sa.Column("rows_pruned_at", sa.DateTime))
    runs = sa.table(
        "kpi_execution_results",
        sa.column("id", sa.Integer),
        sa.column("params", sa.Text),
        sa.column("series_key", sa.String),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(runs.c.id, runs.c.params)).all()
    for run_id, params in rows:
        connection.execute(
            runs.update().where(runs.c.id == run_id).values(series_key=_series_key(params))
        )
    op.create_index(
        "ix_kpi_execution_results_series",
        "kpi_execution_results",
        ["kpi_id", "series_key", "id"],
    )
    op.create_index(
        "ix_kpi_execution_results_schedule", "kpi_execution_results", ["schedule_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_kpi_execution_results_schedule", "kpi_execution_results")
    op.drop_index("ix_kpi_execution_results_series", "kpi_execution_results")
    with op.batch_alter_table("kpi_execution_results") as batch:
        for name in ("rows_pruned_at", "schedule_id", "period_end", "period_start", "series_key"):
            batch.drop_column(name)
    with op.batch_alter_table("kpi_definitions") as batch:
        for name in ("breakdown_column", "period", "targets", "official_params"):
            batch.drop_column(name)
