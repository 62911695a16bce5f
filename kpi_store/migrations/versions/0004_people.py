"""People and roles: who signs in, what they may do, which data sources they see.

- ``people``: one row per person, keyed by the case-folded email; ``role`` is one of
  viewer, runner, editor, admin; ``data_sources`` a JSON list of names (empty = all);
  ``search_key`` the case-folded name and email, for finding people in the audit log.
- ``ix_kpi_execution_results_requested_by``: "my runs" and the fair-share limits look
  runs up by who asked for them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("email", sa.String(200), primary_key=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("search_key", sa.Text, nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("data_sources", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("last_seen_at", sa.DateTime),
    )
    op.create_index(
        "ix_kpi_execution_results_requested_by",
        "kpi_execution_results",
        ["requested_by", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_kpi_execution_results_requested_by", table_name="kpi_execution_results")
    op.drop_table("people")
