"""Notifications: what alert rules tell people, and its delivery by the workers.

- ``notifications``: one row per event (its JSON, the KPI, rule and run it is about).
- ``notification_deliveries``: one row per channel and target (an inbox entry per person,
  an email per person, a call per webhook), with its status, attempts and next try.
- ``notification_attempts``: every try to send a delivery, with its error.
- ``webhook_channels``: named webhook URLs and signing secrets (both encrypted with the
  store key) and their health.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("kpi_id", sa.Integer),
        sa.Column("rule_id", sa.Integer),
        sa.Column("run_id", sa.Integer),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_notifications_kpi", "notifications", ["kpi_id", "id"])
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "notification_id",
            sa.Integer,
            sa.ForeignKey("notifications.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime),
        sa.Column("failed_at", sa.DateTime),
        sa.Column("read_at", sa.DateTime),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_notification_deliveries_due", "notification_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index(
        "ix_notification_deliveries_target",
        "notification_deliveries",
        ["channel", "target", "id"],
    )
    op.create_index(
        "ix_notification_deliveries_notification", "notification_deliveries", ["notification_id"]
    )
    op.create_table(
        "notification_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id",
            sa.Integer,
            sa.ForeignKey("notification_deliveries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempted_at", sa.DateTime, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_notification_attempts_delivery", "notification_attempts", ["delivery_id", "id"]
    )
    op.create_table(
        "webhook_channels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("display_url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("last_failure_at", sa.DateTime),
        sa.Column("last_success_at", sa.DateTime),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("last_delivery_failed", sa.Boolean, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("uq_webhook_channels_name", "webhook_channels", ["name"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_webhook_channels_name", table_name="webhook_channels")
    op.drop_table("webhook_channels")
    op.drop_index("ix_notification_attempts_delivery", table_name="notification_attempts")
    op.drop_table("notification_attempts")
    for name in (
        "ix_notification_deliveries_notification",
        "ix_notification_deliveries_target",
        "ix_notification_deliveries_due",
    ):
        op.drop_index(name, table_name="notification_deliveries")
    op.drop_table("notification_deliveries")
    op.drop_index("ix_notifications_kpi", table_name="notifications")
    op.drop_table("notifications")
