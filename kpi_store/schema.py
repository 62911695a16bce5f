"""The tables, as SQLAlchemy Core objects for building statements.

The schema itself is created and changed only by the Alembic migrations in
``kpi_store/migrations``; keep the two in step.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

data_sources = sa.Table(
    "data_sources",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("display_url", sa.Text),  # the URL with its password masked; ``url`` is encrypted
)

kpi_definitions = sa.Table(
    "kpi_definitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    # casefold(name): what "unique among active KPIs" compares, the same on every database.
    # Up to three characters per name character (migration 0002).
    sa.Column("name_key", sa.String(600), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("nl_definition", sa.Text, nullable=False),
    sa.Column("data_source", sa.String(100), sa.ForeignKey("data_sources.name"), nullable=False),
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
    # JSON (migration 0006): the pinned official parameter set (null: the defaults),
    # targets per parameter value, the period (start and end parameters, grain).
    sa.Column("official_params", sa.Text),
    sa.Column("targets", sa.Text),
    sa.Column("period", sa.Text),
    sa.Column("breakdown_column", sa.String(200)),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Index(
        "uq_kpi_definitions_active_name",
        "name_key",
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    ),
    sqlite_autoincrement=True,
)

kpi_definition_history = sa.Table(
    "kpi_definition_history",
    metadata,
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

kpi_audit_log = sa.Table(
    "kpi_audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("occurred_at", sa.DateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(30), nullable=False),
    sa.Column("kpi_id", sa.Integer),
    sa.Column("entity", sa.String(200)),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("entry_hash", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer),  # 1, 2, 3… with no gaps: a removed entry leaves a hole
    sa.Index("ix_kpi_audit_log_seq", "seq", unique=True),
    sa.Index("ix_kpi_audit_log_kpi_id", "kpi_id", "id"),
    sa.Index("ix_kpi_audit_log_occurred_at", "occurred_at"),
    sqlite_autoincrement=True,
)

people = sa.Table(
    "people",
    metadata,
    sa.Column("email", sa.String(200), primary_key=True),  # case-folded
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("search_key", sa.Text, nullable=False),  # casefold(name + " " + email)
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("data_sources", sa.Text, nullable=False),  # JSON list of names; [] = all
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("last_seen_at", sa.DateTime),
)

kpi_store_meta = sa.Table(
    "kpi_store_meta",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

kpi_execution_results = sa.Table(
    "kpi_execution_results",
    metadata,
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
    # Migration 0006: the series the run belongs to (sha256 of its parameters without the
    # period dates), its period, the schedule that queued it, when retention removed its rows.
    sa.Column("series_key", sa.String(64)),
    sa.Column("period_start", sa.Date),
    sa.Column("period_end", sa.Date),
    sa.Column("schedule_id", sa.Integer),
    sa.Column("rows_pruned_at", sa.DateTime),
    sa.Index("ix_kpi_execution_results_status", "status", "id"),
    sa.Index("ix_kpi_execution_results_series", "kpi_id", "series_key", "id"),
    sa.Index("ix_kpi_execution_results_schedule", "schedule_id", "id"),
    sa.Index("ix_kpi_execution_results_kpi", "kpi_id", "id"),
    sa.Index("ix_kpi_execution_results_batch", "batch_id"),
    sa.Index("ix_kpi_execution_results_requested_by", "requested_by", "id"),
    sqlite_autoincrement=True,
)

kpi_execution_result_rows = sa.Table(
    "kpi_execution_result_rows",
    metadata,
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

kpi_result_views = sa.Table(
    "kpi_result_views",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "execution_id",
        sa.Integer,
        sa.ForeignKey("kpi_execution_results.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("spec_key", sa.String(64), nullable=False),  # sha256 of the sort and filters
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("uq_kpi_result_views_key", "execution_id", "spec_key", unique=True),
    sqlite_autoincrement=True,
)

kpi_result_view_rows = sa.Table(
    "kpi_result_view_rows",
    metadata,
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

# -- schedules (migration 0007, kpi_store/schedules.py) ---------------------------------------

kpi_schedules = sa.Table(
    "kpi_schedules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "kpi_id",
        sa.Integer,
        sa.ForeignKey("kpi_definitions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),  # an IANA name
    # JSON: the values given, relative date expressions ("start of last month") as text.
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("run_as", sa.String(200), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("next_run_at", sa.DateTime),  # UTC; null while paused; claimed by its UPDATE
    sa.Column("last_run_at", sa.DateTime),
    sa.Column("last_run_id", sa.Integer),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Index("ix_kpi_schedules_due", "active", "next_run_at"),
    sa.Index("ix_kpi_schedules_kpi", "kpi_id", "id"),
    sqlite_autoincrement=True,
)

kpi_schedule_ticks = sa.Table(
    "kpi_schedule_ticks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "schedule_id",
        sa.Integer,
        sa.ForeignKey("kpi_schedules.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("due_at", sa.DateTime, nullable=False),
    sa.Column("decided_at", sa.DateTime, nullable=False),
    sa.Column("outcome", sa.String(10), nullable=False),  # fired | skipped | failed
    sa.Column("reason", sa.Text),
    sa.Column("run_id", sa.Integer),
    sa.Column("missed", sa.Integer, nullable=False),  # later fire times passed before it
    sa.Column("decided_by", sa.String(100), nullable=False),  # the process (host:pid:label)
    sa.Index("ix_kpi_schedule_ticks_schedule", "schedule_id", "id"),
    sqlite_autoincrement=True,
)

# -- alert rules (migration 0008, kpi_store/alerts.py) ----------------------------------------

alert_rules = sa.Table(
    "alert_rules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "kpi_id",
        sa.Integer,
        sa.ForeignKey("kpi_definitions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.String(200), nullable=False),
    # The watched parameter set (JSON, without period dates) and its series key; both null
    # for the official set, which the rule follows as the KPI's official parameters change.
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
    sa.Column("webhooks", sa.Text, nullable=False),  # JSON list of channel names
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("sql_hash", sa.String(64), nullable=False),  # the KPI's SQL the state is about
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
    sa.Index("ix_alert_rules_kpi", "kpi_id", "id"),
    sqlite_autoincrement=True,
)

alert_evaluations = sa.Table(
    "alert_evaluations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "rule_id", sa.Integer, sa.ForeignKey("alert_rules.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("run_id", sa.Integer),  # null: a reminder while firing, not a run
    sa.Column("evaluated_at", sa.DateTime, nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("condition_met", sa.Boolean),
    sa.Column("value", sa.Float),
    sa.Column("target", sa.Float),
    sa.Column("change_pct", sa.Float),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("state_before", sa.String(20), nullable=False),
    sa.Column("state_after", sa.String(20), nullable=False),
    sa.Column("notification", sa.String(20)),  # the kind due, told or held back
    sa.Column("notified", sa.Boolean, nullable=False),
    sa.Column("recipients", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),  # why notified, or why not
    sa.Index("uq_alert_evaluations_run", "rule_id", "run_id", unique=True),
    sa.Index("ix_alert_evaluations_rule", "rule_id", "id"),
    sqlite_autoincrement=True,
)

alert_subscriptions = sa.Table(
    "alert_subscriptions",
    metadata,
    sa.Column(
        "rule_id",
        sa.Integer,
        sa.ForeignKey("alert_rules.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("person", sa.String(200), primary_key=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("ix_alert_subscriptions_person", "person"),
)

# -- notifications (migration 0009, kpi_store/notifications.py) -------------------------------

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(20), nullable=False),
    # No foreign keys: a notification outlives its rule, run or KPI (the event keeps names).
    sa.Column("kpi_id", sa.Integer),
    sa.Column("rule_id", sa.Integer),
    sa.Column("run_id", sa.Integer),
    sa.Column("event", sa.Text, nullable=False),  # the NotificationEvent as JSON
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("ix_notifications_kpi", "kpi_id", "id"),
    sqlite_autoincrement=True,
)

notification_deliveries = sa.Table(
    "notification_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "notification_id",
        sa.Integer,
        sa.ForeignKey("notifications.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("channel", sa.String(10), nullable=False),  # inbox | email | webhook
    sa.Column("target", sa.String(200), nullable=False),  # a person, or a webhook's name
    sa.Column("status", sa.String(10), nullable=False),  # pending | sent | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    # When it is due; while a worker sends it, the end of that worker's lease.
    sa.Column("next_attempt_at", sa.DateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("sent_at", sa.DateTime),
    sa.Column("failed_at", sa.DateTime),
    sa.Column("read_at", sa.DateTime),  # inbox entries only
    sa.Index("ix_notification_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_notification_deliveries_target", "channel", "target", "id"),
    sa.Index("ix_notification_deliveries_notification", "notification_id"),
    sqlite_autoincrement=True,
)

notification_attempts = sa.Table(
    "notification_attempts",
    metadata,
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
    sa.Index("ix_notification_attempts_delivery", "delivery_id", "id"),
    sqlite_autoincrement=True,
)

webhook_channels = sa.Table(
    "webhook_channels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("url", sa.Text, nullable=False),  # encrypted with the store key (fernet:…)
    sa.Column("display_url", sa.Text, nullable=False),  # scheme and host; the path masked
    sa.Column("secret", sa.Text, nullable=False),  # encrypted; signs every call
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("last_failure_at", sa.DateTime),
    sa.Column("last_success_at", sa.DateTime),
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    sa.Column("last_delivery_failed", sa.Boolean, nullable=False),
    sa.Index("uq_webhook_channels_name", "name", unique=True),
    sqlite_autoincrement=True,
)
