"""Schedules: KPIs that run themselves, and the log of every tick.

- ``kpi_schedules``: a KPI's cron expression, IANA time zone, parameter set (JSON, relative
  dates as text), who it runs as, active or paused, ``next_run_at`` (UTC; the conditional
  UPDATE of this column is how a worker claims a tick), the last run, who made and changed it.
- ``kpi_schedule_ticks``: one row per due tick a worker decided: fired (with its run),
  skipped (a run of the schedule was still going) or failed (the run could not be
  created), the reason, and how many later fire times passed before it was decided.

Both go with their KPI (ON DELETE CASCADE).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kpi_schedules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "kpi_id",
            sa.Integer,
            sa.ForeignKey("kpi_definitions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("run_as", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("next_run_at", sa.DateTime),
        sa.Column("last_run_at", sa.DateTime),
        sa.Column("last_run_id", sa.Integer),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_kpi_schedules_due", "kpi_schedules", ["active", "next_run_at"])
    op.create_index("ix_kpi_schedules_kpi", "kpi_schedules", ["kpi_id", "id"])
    op.create_table(
        "kpi_schedule_ticks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "schedule_id",
            sa.Integer,
            sa.ForeignKey("kpi_schedules.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("due_at", sa.DateTime, nullable=False),
        sa.Column("decided_at", sa.DateTime, nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("run_id", sa.Integer),
        sa.Column("missed", sa.Integer, nullable=False),
        sa.Column("decided_by", sa.String(100), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_kpi_schedule_ticks_schedule", "kpi_schedule_ticks", ["schedule_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_kpi_schedule_ticks_schedule", table_name="kpi_schedule_ticks")
    op.drop_table("kpi_schedule_ticks")
    op.drop_index("ix_kpi_schedules_kpi", table_name="kpi_schedules")
    op.drop_index("ix_kpi_schedules_due", table_name="kpi_schedules")
    op.drop_table("kpi_schedules")
