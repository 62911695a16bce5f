"""kpi_store: define, version, run and audit KPIs over SQL data sources."""

from .errors import (
    DataSourceError,
    ExecutionError,
    KPIStoreError,
    NotFoundError,
    UnsafeQueryError,
    ValidationError,
    VersionConflictError,
)
from .models import (
    KPI,
    AuditEntry,
    AuditVerification,
    BatchResult,
    DataSource,
    Execution,
    KPISpec,
    KPIVersion,
    ParameterSpec,
    ResultPage,
    VersionDiff,
)
from .store import KPIStore
from .vocabulary import (
    RAG,
    Aggregation,
    AuditAction,
    Direction,
    KPIStatus,
    ParamType,
    RunMode,
    RunStatus,
)
from .worker import Worker

__all__ = [
    "KPI",
    "RAG",
    "Aggregation",
    "AuditAction",
    "Direction",
    "KPIStatus",
    "ParamType",
    "RunMode",
    "RunStatus",
    "AuditEntry",
    "AuditVerification",
    "BatchResult",
    "DataSource",
    "DataSourceError",
    "Execution",
    "ExecutionError",
    "KPISpec",
    "KPIStore",
    "KPIStoreError",
    "KPIVersion",
    "NotFoundError",
    "ParameterSpec",
    "ResultPage",
    "UnsafeQueryError",
    "ValidationError",
    "VersionConflictError",
    "VersionDiff",
    "Worker",
]
