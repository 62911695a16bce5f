"""Initial schema: definitions with history, audit log, data sources, executions and rows.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_sources",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "kpi_definitions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("name_key", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("nl_definition", sa.Text, nullable=False),
        sa.Column(
            "data_source", sa.String(100), sa.ForeignKey("data_sources.name"), nullable=False
        ),
        sa.Column("sql", sa.Text, nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("value_column", sa.String(200)),
        sa.Column("aggregation", sa.String(10), nullable=False),
        sa.Column("unit", sa.String(50), nullable=False),
        sa.Column("target", sa.Float),
        sa.Column("direction", sa.String(20), nullable=False),
        sa.Column("tolerance_pct", sa.Float, nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("timeout_s", sa.Float),
        sa.Column("max_retries", sa.Integer),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sqlite_autoincrement=True,
    )
    active = sa.text("status = 'active'")
    op.create_index(
        "uq_kpi_definitions_active_name",
        "kpi_definitions",
        ["name_key"],
        unique=True,
        sqlite_where=active,
        postgresql_where=active,
    )
    op.create_table(
        "kpi_definition_history",
        sa.Column(
            "kpi_id",
            sa.Integer,
            sa.ForeignKey("kpi_definitions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("changed_by", sa.String(200), nullable=False),
        sa.Column("changed_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "kpi_audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("occurred_at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("kpi_id", sa.Integer),
        sa.Column("entity", sa.String(200)),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_kpi_audit_log_kpi_id", "kpi_audit_log", ["kpi_id", "id"])
    op.create_index("ix_kpi_audit_log_occurred_at", "kpi_audit_log", ["occurred_at"])
    op.create_table(
        "kpi_execution_results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "kpi_id",
            sa.Integer,
            sa.ForeignKey("kpi_definitions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kpi_version", sa.Integer, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("batch_id", sa.String(36)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("execution_time_ms", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("row_count", sa.Integer),
        sa.Column("truncated", sa.Boolean, nullable=False),
        sa.Column("columns", sa.Text, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("first_row_sample", sa.Text),
        sa.Column("timeout_s", sa.Float, nullable=False),
        sa.Column("max_retries", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.String(100)),
        sa.Column("heartbeat_at", sa.DateTime),
        sa.Column("rows_read", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("requeue_count", sa.Integer, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_kpi_execution_results_status", "kpi_execution_results", ["status", "id"])
    op.create_index("ix_kpi_execution_results_kpi", "kpi_execution_results", ["kpi_id", "id"])
    op.create_index("ix_kpi_execution_results_batch", "kpi_execution_results", ["batch_id"])
    op.create_table(
        "kpi_execution_result_rows",
        sa.Column(
            "execution_id",
            sa.Integer,
            sa.ForeignKey("kpi_execution_results.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("row_number", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("row_data", sa.Text, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("kpi_execution_result_rows")
    op.drop_table("kpi_execution_results")
    op.drop_table("kpi_audit_log")
    op.drop_table("kpi_definition_history")
    op.drop_index("uq_kpi_definitions_active_name", table_name="kpi_definitions")
    op.drop_table("kpi_definitions")
    op.drop_table("data_sources")
