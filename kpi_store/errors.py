"""The one exception hierarchy of kpi_store.

Every message is written for a business user: it names the field or thing at fault
and says what would be acceptable. Pages show ``str(error)`` as is.
"""

from __future__ import annotations

import datetime as dt


class KPIStoreError(Exception):
    """Base class of every error kpi_store raises on purpose."""


class NotFoundError(KPIStoreError):
    """A KPI, version, execution or data source that does not exist."""


class ValidationError(KPIStoreError):
    """Input that was refused before anything was written.

    ``field_errors`` maps a field name (``"sql"``, ``"parameters[0].default"``…) to the
    message for that field, so a form can show each next to its input.
    """

    def __init__(self, message: str, field_errors: dict[str, str] | None = None):
        super().__init__(message)
        self.field_errors: dict[str, str] = dict(field_errors or {})


class UnsafeQueryError(ValidationError):
    """SQL that is not exactly one read-only query."""

    def __init__(self, message: str):
        super().__init__(message, {"sql": message})


class VersionConflictError(KPIStoreError):
    """An edit based on a version that someone else has replaced meanwhile."""

    def __init__(self, message: str, current_version: int, expected_version: int):
        super().__init__(message)
        self.current_version = current_version
        self.expected_version = expected_version


class PermissionDeniedError(KPIStoreError):
    """The acting person may not do this (role, data-source scope, or not a known,
    active person). The message names what was refused and why; the refusal is audited."""

    def __init__(self, message: str, operation: str = ""):
        super().__init__(message)
        self.operation = operation


class DataSourceError(KPIStoreError):
    """A data source that cannot be reached or opened."""


class ExecutionError(KPIStoreError):
    """A run that cannot be started, or an operation on a run in the wrong state."""


class RowsRemovedError(ExecutionError):
    """A run whose stored rows the retention policy removed: its record, value and
    parameters stay, its rows can no longer be read or exported. ``why`` names the limit
    that removed them ("runs older than 30 days"), when known."""

    def __init__(self, execution_id: int, removed_at: dt.datetime, why: str = ""):
        policy = f" ({why})" if why else ""
        super().__init__(
            f"The rows of run {execution_id} were removed on {removed_at:%Y-%m-%d} by the "
            f"retention policy{policy} — its value and parameters are kept."
        )
        self.execution_id, self.removed_at, self.why = execution_id, removed_at, why


class LostOwnership(Exception):  # noqa: N818 - internal signal, not an error for users
    """The run is no longer this holder's to write (re-queued or cancelled elsewhere)."""


class ResourceLimitError(ExecutionError):
    """A run or preview that passed a resource limit (value size, stored bytes): it fails
    at once, is never retried, and keeps no rows. The message names the limit and the
    setting that raises it."""
