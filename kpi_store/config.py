"""Settings read from the environment, each declared once with its default and help.

``Settings.from_env()`` reads every ``KPI_*`` variable below; ``SETTINGS_HELP`` lists them
for the README and the CLI. Timing knobs live here too, so tests shorten them instead of
sleeping.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_URL = "sqlite:///data/kpi_store.db"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _setting(env: str, default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:
    """One setting: its variable, default and help; ``choices`` for a text that must be
    one of a few words (checked when read, with a message listing them)."""
    return field(default=default, metadata={"env": env, "help": help, "choices": choices})


@dataclass(frozen=True)
class Settings:
    """Store-wide defaults; ``Settings.from_env()`` reads each from its variable."""

    url: str = _setting(
        "KPI_STORE_URL", DEFAULT_URL, "SQLAlchemy URL of the store database (SQLite or PostgreSQL)."
    )
    default_timeout_s: float = _setting(
        "KPI_DEFAULT_TIMEOUT_S", 60.0, "Time limit of a run when the KPI sets none (seconds)."
    )
    default_max_retries: int = _setting(
        "KPI_DEFAULT_MAX_RETRIES", 2, "Retries on transient faults when the KPI sets none."
    )
    row_cap: int = _setting(
        "KPI_ROW_CAP",
        1_000_000,
        "Most rows a run stores; the rest is cut and the run marked truncated.",
    )
    retry_wait_s: float = _setting(
        "KPI_RETRY_WAIT_S",
        0.2,
        "First wait before retrying a transient fault (seconds; doubles, with jitter).",
    )
    retry_max_wait_s: float = _setting(
        "KPI_RETRY_MAX_WAIT_S", 5.0, "Longest wait between two retries (seconds)."
    )
    heartbeat_interval_s: float = _setting(
        "KPI_HEARTBEAT_INTERVAL_S",
        1.0,
        "How often a process beats its running jobs' heartbeats and checks for cancels (s).",
    )
    heartbeat_timeout_s: float = _setting(
        "KPI_HEARTBEAT_TIMEOUT_S",
        30.0,
        "A running job with an older heartbeat is re-queued once, then failed (seconds).",
    )
    worker_poll_s: float = _setting(
        "KPI_WORKER_POLL_S",
        0.25,
        "How often an idle worker thread looks for a queued job (seconds).",
    )
    recovery_interval_s: float = _setting(
        "KPI_RECOVERY_INTERVAL_S",
        5.0,
        "How often a worker looks for jobs whose worker died (seconds).",
    )
    embedded_worker: bool = _setting(
        "KPI_EMBEDDED_WORKER",
        True,
        "Start a background worker inside each dashboard server process.",
    )
    embedded_worker_concurrency: int = _setting(
        "KPI_EMBEDDED_WORKER_CONCURRENCY", 2, "Threads of the dashboard's embedded worker."
    )
    ui_poll_s: float = _setting(
        "KPI_UI_POLL_S",
        2.0,
        "How often the dashboard's live monitors refresh while runs are going (seconds).",
    )
    actor: str = _setting(
        "KPI_ACTOR",
        "",
        "Name the CLI records as the actor of its changes (default: your login name).",
    )
    source_dirs: str = _setting(
        "KPI_SOURCE_DIRS",
        "",
        "Folders SQLite and DuckDB data sources may live in, separated by ':' "
        "(default: a sources/ folder beside the store).",
    )
    secret_key: str = _setting(
        "KPI_SECRET_KEY",
        "",
        "Key that encrypts data-source credentials and signs the audit chain "
        "(default: generated once into KPI_SECRET_KEY_FILE).",
    )
    secret_key_file: str = _setting(
        "KPI_SECRET_KEY_FILE",
        "",
        "Where the generated key is kept, owner-only (default: kpi_secret.key beside the store).",
    )
    value_max_bytes: int = _setting(
        "KPI_VALUE_MAX_BYTES",
        16_000_000,
        "Largest single value (text or blob) a query may produce, in bytes.",
    )
    result_max_bytes: int = _setting(
        "KPI_RESULT_MAX_BYTES",
        256_000_000,
        "Most bytes of rows one run may store; a run over it fails and keeps no rows.",
    )
    max_running_per_user: int = _setting(
        "KPI_MAX_RUNNING_PER_USER", 4, "Most runs one person may have running at once."
    )
    max_queued_per_user: int = _setting(
        "KPI_MAX_QUEUED_PER_USER", 50, "Most runs one person may have queued at once."
    )
    auth: str = _setting(
        "KPI_AUTH",
        "off",
        "Sign-in: `off` (single-user demo, names typed and marked not verified) or `oidc` "
        "(Streamlit's OpenID Connect sign-in; roles enforced by the store).",
        choices=("off", "oidc"),
    )
    admins: str = _setting(
        "KPI_ADMINS",
        "",
        "Emails of people who are always active admins, separated by commas "
        "(how the first admin gets in).",
    )
    default_role: str = _setting(
        "KPI_DEFAULT_ROLE",
        "viewer",
        "Role of a signed-in person the store does not know yet; `none` refuses them.",
        choices=("viewer", "runner", "editor", "admin", "none"),
    )
    audit_checkpoint_file: str = _setting(
        "KPI_AUDIT_CHECKPOINT_FILE",
        "",
        "File outside the store where workers append signed audit checkpoints "
        "(default: kpi_audit_checkpoints.jsonl beside the store).",
    )
    schedule_poll_s: float = _setting(
        "KPI_SCHEDULE_POLL_S",
        1.0,
        "How often a worker looks for schedules that are due (seconds).",
    )
    public_url: str = _setting(
        "KPI_PUBLIC_URL",
        "http://localhost:8501",
        "The dashboard's address as people reach it, for links in emails and webhooks.",
    )
    smtp_host: str = _setting(
        "KPI_SMTP_HOST", "", "Mail server for alert emails (empty: no email is sent)."
    )
    smtp_port: int = _setting("KPI_SMTP_PORT", 587, "Port of the mail server.")
    smtp_starttls: bool = _setting(
        "KPI_SMTP_STARTTLS", True, "Switch the mail connection to TLS with STARTTLS."
    )
    smtp_user: str = _setting("KPI_SMTP_USER", "", "User name for the mail server, if any.")
    smtp_password: str = _setting("KPI_SMTP_PASSWORD", "", "Password for the mail server.")
    smtp_from: str = _setting(
        "KPI_SMTP_FROM", "kpi-desk@localhost", "Sender address of alert emails."
    )
    notify_timeout_s: float = _setting(
        "KPI_NOTIFY_TIMEOUT_S", 10.0, "Time limit of one email or webhook delivery (seconds)."
    )
    notify_max_attempts: int = _setting(
        "KPI_NOTIFY_MAX_ATTEMPTS",
        5,
        "Deliveries of one notification tried before it is marked failed.",
    )
    notify_retry_wait_s: float = _setting(
        "KPI_NOTIFY_RETRY_WAIT_S",
        1.0,
        "First wait before retrying a failed delivery (seconds; doubles, with jitter).",
    )
    keep_rows_days: int = _setting(
        "KPI_KEEP_ROWS_DAYS",
        0,
        "Runs older than this many days lose their stored rows, keeping their record "
        "(0: keep forever).",
    )
    keep_rows_runs: int = _setting(
        "KPI_KEEP_ROWS_RUNS",
        0,
        "Runs beyond the newest N per KPI and parameter set lose their stored rows (0: keep all).",
    )
    prune_interval_s: float = _setting(
        "KPI_PRUNE_INTERVAL_S",
        86_400.0,
        "How often a worker removes rows past the retention limits (seconds).",
    )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); unset or empty means default."""
        source: Mapping[str, str] = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            raw = (source.get(item.metadata["env"]) or "").strip()
            if raw:
                values[item.name] = _parse(item.metadata["env"], type(item.default), raw)
                _check_choice(item.metadata["env"], values[item.name], item.metadata["choices"])
        return cls(**values)

    @property
    def auth_on(self) -> bool:
        """True when people sign in and the store enforces roles."""
        return self.auth != "off"

    def admin_emails(self) -> frozenset[str]:
        """``KPI_ADMINS`` as case-folded emails."""
        return frozenset(e.strip().casefold() for e in self.admins.split(",") if e.strip())

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (tests shorten timing knobs this way)."""
        return dataclasses.replace(self, **changes)


def _parse(env: str, kind: type, raw: str) -> Any:
    try:
        if kind is bool:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        expected = {bool: "1 or 0", int: "a whole number", float: "a number"}.get(kind, "text")
        raise ValueError(f"{env}={raw!r} is not valid: expected {expected}.") from None


def _check_choice(env: str, value: Any, choices: tuple[str, ...]) -> None:
    if choices and value not in choices:
        allowed = ", ".join(choices)
        raise ValueError(f"{env}={value!r} is not valid: expected one of {allowed}.")


def settings_help() -> list[tuple[str, str, str]]:
    """(variable, default, help) for every setting, in declaration order."""
    return [
        (f.metadata["env"], str(f.default), f.metadata["help"])
        for f in dataclasses.fields(Settings)
    ]
