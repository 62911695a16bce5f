"""Sorted and filtered views of stored results.

- ``kpi_result_views``: one row per (run, sort and filters), with its filtered row count.
- ``kpi_result_view_rows``: the view's order, as (view, position, row number), so a page of
  a sorted or filtered view is a position range like an unsorted page.

Both go with their run (ON DELETE CASCADE).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kpi_result_views",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "execution_id",
            sa.Integer,
            sa.ForeignKey("kpi_execution_results.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("spec_key", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "uq_kpi_result_views_key", "kpi_result_views", ["execution_id", "spec_key"], unique=True
    )
    op.create_table(
        "kpi_result_view_rows",
        sa.Column(
            "view_id",
            sa.Integer,
            sa.ForeignKey("kpi_result_views.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("row_number", sa.Integer, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("kpi_result_view_rows")
    op.drop_index("uq_kpi_result_views_key", table_name="kpi_result_views")
    op.drop_table("kpi_result_views")
