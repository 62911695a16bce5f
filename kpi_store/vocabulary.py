"""The words kpi_store uses for states and kinds, one enum each.

Every one is a ``StrEnum``: members compare equal to their plain values ("success"), are
stored as those values, and pages, the CLI and styles derive their lists from them.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES

    @property
    def active(self) -> bool:
        return self in ACTIVE_STATUSES


FINISHED_STATUSES: frozenset[RunStatus] = frozenset(
    {RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.CANCELLED}
)
ACTIVE_STATUSES: frozenset[RunStatus] = frozenset({RunStatus.PENDING, RunStatus.RUNNING})


class RunMode(StrEnum):
    NOW = "now"
    BACKGROUND = "background"


class KPIStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class AuditAction(StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    ARCHIVE = "ARCHIVE"
    UNARCHIVE = "UNARCHIVE"
    DELETE = "DELETE"
    RESTORE = "RESTORE"
    DATA_SOURCE_ADD = "DATA_SOURCE_ADD"
    DATA_SOURCE_REMOVE = "DATA_SOURCE_REMOVE"
    EXECUTE = "EXECUTE"
    CANCEL = "CANCEL"
    EXPORT = "EXPORT"
    PREVIEW = "PREVIEW"
    DATA_UPLOAD = "DATA_UPLOAD"
    PERSON_ADD = "PERSON_ADD"
    PERSON_UPDATE = "PERSON_UPDATE"
    DENIED = "DENIED"
    BACKFILL = "BACKFILL"
    SCHEDULE_CREATE = "SCHEDULE_CREATE"
    SCHEDULE_UPDATE = "SCHEDULE_UPDATE"
    SCHEDULE_DELETE = "SCHEDULE_DELETE"
    RULE_CREATE = "RULE_CREATE"
    RULE_UPDATE = "RULE_UPDATE"
    RULE_DELETE = "RULE_DELETE"
    RULE_RESET = "RULE_RESET"
    SUBSCRIBE = "SUBSCRIBE"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    CHANNEL_ADD = "CHANNEL_ADD"
    CHANNEL_UPDATE = "CHANNEL_UPDATE"
    CHANNEL_REMOVE = "CHANNEL_REMOVE"
    PRUNE = "PRUNE"


class Role(StrEnum):
    """What a person may do; each role includes every one before it."""

    VIEWER = "viewer"  # see KPIs, runs, rows, history
    RUNNER = "runner"  # run, cancel own runs, export
    EDITOR = "editor"  # create, edit, archive, restore KPIs
    ADMIN = "admin"  # data sources, uploads, delete, people, audit verification and export

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def includes(self, other: Role) -> bool:
        """True when this role may do everything ``other`` may."""
        return self.rank >= Role(other).rank


class AuthMode(StrEnum):
    OFF = "off"  # single-user demo mode: names are typed, not verified
    OIDC = "oidc"  # sign-in through an OpenID Connect provider (st.login)


class ParamType(StrEnum):
    STR = "str"
    INT = "int"
    FLOAT = "float"
    DATE = "date"
    BOOL = "bool"


class Aggregation(StrEnum):
    SUM = "sum"
    AVG = "avg"
    COUNT = "count"
    MIN = "min"
    MAX = "max"
    FIRST = "first"


class Direction(StrEnum):
    HIGHER_IS_BETTER = "higher_is_better"
    LOWER_IS_BETTER = "lower_is_better"


class RAG(StrEnum):
    """A successful run's status against its target; ``NO_DATA`` when it had no rows or
    a NULL value (never read as 0, never "off target")."""

    GREEN = "green"
    AMBER = "amber"
    RED = "red"
    NO_DATA = "no_data"


class Grain(StrEnum):
    """How long one period of a period KPI is."""

    DAY = "day"
    WEEK = "week"  # Monday to Sunday (ISO weeks)
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class CompareTo(StrEnum):
    """What a period KPI's value is compared with."""

    PREVIOUS_PERIOD = "previous_period"
    LAST_YEAR = "last_year"  # the same period a year before
    TARGET = "target"
