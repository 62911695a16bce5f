"""Alert rules over a KPI's series, their evaluation log and subscriptions.

- ``alert_rules``: what a rule watches (the official parameter set, or one named set and
  its series key), its condition, its notification settings, and its state (streaks, the
  open incident, the newest run it evaluated, when it last notified).
- ``alert_evaluations``: one row per rule and run evaluated (unique), with the value, the
  states before and after, and whether it notified and why not.
- ``alert_subscriptions``: who is told when a rule notifies.

All go with their KPI (ON DELETE CASCADE).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "kpi_id",
            sa.Integer,
            sa.ForeignKey("kpi_definitions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("params", sa.Text),
        sa.Column("series_key", sa.String(64)),
        sa.Column("condition", sa.String(20), nullable=False),
        sa.Column("op", sa.String(2)),
        sa.Column("threshold", sa.Float),
        sa.Column("include_amber", sa.Boolean, nullable=False),
        sa.Column("for_runs", sa.Integer, nullable=False),
        sa.Column("recover_runs", sa.Integer, nullable=False),
        sa.Column("renotify_after_s", sa.Float),
        sa.Column("notify_on_no_data", sa.Boolean, nullable=False),
        sa.Column("notify_on_error", sa.Boolean, nullable=False),
        sa.Column("muted_until", sa.DateTime),
        sa.Column("webhooks", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("sql_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("state_since", sa.DateTime, nullable=False),
        sa.Column("met_streak", sa.Integer, nullable=False),
        sa.Column("good_streak", sa.Integer, nullable=False),
        sa.Column("firing_since", sa.DateTime),
        sa.Column("firing_notified", sa.Boolean, nullable=False),
        sa.Column("last_evaluated_run_id", sa.Integer),
        sa.Column("last_notified_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_alert_rules_kpi", "alert_rules", ["kpi_id", "id"])
    op.create_table(
        "alert_evaluations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "rule_id",
            sa.Integer,
            sa.ForeignKey("alert_rules.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("run_id", sa.Integer),
        sa.Column("evaluated_at", sa.DateTime, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("condition_met", sa.Boolean),
        sa.Column("value", sa.Float),
        sa.Column("target", sa.Float),
        sa.Column("change_pct", sa.Float),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("state_before", sa.String(20), nullable=False),
        sa.Column("state_after", sa.String(20), nullable=False),
        sa.Column("notification", sa.String(20)),
        sa.Column("notified", sa.Boolean, nullable=False),
        sa.Column("recipients", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "uq_alert_evaluations_run", "alert_evaluations", ["rule_id", "run_id"], unique=True
    )
    op.create_index("ix_alert_evaluations_rule", "alert_evaluations", ["rule_id", "id"])
    op.create_table(
        "alert_subscriptions",
        sa.Column(
            "rule_id",
            sa.Integer,
            sa.ForeignKey("alert_rules.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("person", sa.String(200), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_alert_subscriptions_person", "alert_subscriptions", ["person"])


def downgrade() -> None:
    op.drop_index("ix_alert_subscriptions_person", table_name="alert_subscriptions")
    op.drop_table("alert_subscriptions")
    op.drop_index("ix_alert_evaluations_rule", table_name="alert_evaluations")
    op.drop_index("uq_alert_evaluations_run", table_name="alert_evaluations")
    op.drop_table("alert_evaluations")
    op.drop_index("ix_alert_rules_kpi", table_name="alert_rules")
    op.drop_table("alert_rules")
