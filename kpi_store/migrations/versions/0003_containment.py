"""Containment: masked data-source URLs, a gap-free audit sequence, a small meta table.

- ``data_sources.display_url``: the URL with its password masked. ``url`` itself is
  encrypted by the store at open (it holds the key; migrations do not).
- ``kpi_audit_log.seq``: 1, 2, 3… under the audit lock, so a removed entry leaves a gap
  that verification sees (ids may skip on PostgreSQL when a transaction rolls back).
- ``kpi_store_meta``: store-wide facts, e.g. which hash the audit chain uses.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("data_sources", sa.Column("display_url", sa.Text))
    op.add_column("kpi_audit_log", sa.Column("seq", sa.Integer))
    op.execute(
        "UPDATE kpi_audit_log SET seq = "
        "(SELECT count(*) FROM kpi_audit_log AS earlier WHERE earlier.id <= kpi_audit_log.id)"
    )
    op.create_index("ix_kpi_audit_log_seq", "kpi_audit_log", ["seq"], unique=True)
    op.create_table(
        "kpi_store_meta",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kpi_store_meta")
    op.drop_index("ix_kpi_audit_log_seq", table_name="kpi_audit_log")
    with op.batch_alter_table("kpi_audit_log") as batch:
        batch.drop_column("seq")
    with op.batch_alter_table("data_sources") as batch:
        batch.drop_column("display_url")
