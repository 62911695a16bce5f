"""Shared UI code of the KPI Desk pages; pages import from here only.

Split by concern: ``app`` (store and worker per process, navigation), ``identity``
(sign-in, or the demo mode's typed name; the viewer of each click),
``links`` (every link between pages), ``messages`` (flashes, friendly errors, ``md``),
``actions`` (act for a person, confirm, deferred downloads), ``widgets`` (badges, KPI
card, parameter form, facts, result grid), ``charts``, ``look`` (logo, CSS, status
styles) and ``downloads`` (the streaming CSV route and its link); the tabs of the
Schedules & alerts page (``schedules_view`` and ``schedule_form``, ``alerts_view`` and
``rule_form``, ``channels_view``; ``param_sets``: a parameter set typed for later;
``alert_look``: alert badges). Formatting is shared with the CLI in ``kpi_store.formats``.
"""

from kpi_store import (
    KPI,
    RAG,
    Aggregation,
    AuditAction,
    BatchResult,
    CompareTo,
    DataSource,
    Direction,
    Execution,
    Grain,
    Headline,
    KPIStatus,
    KPIStore,
    KPIStoreError,
    KPIVersion,
    ParameterSpec,
    ParamType,
    PermissionDeniedError,
    Person,
    Role,
    RunMode,
    RunStatus,
    VersionConflictError,
)
from kpi_store.alert_records import KPIAlerts
from kpi_store.definitions import EditOnTop, edit_on_top
from kpi_store.formats import (
    MISSING,
    as_text,
    format_change,
    format_duration,
    format_number,
    format_params,
    format_time,
    format_value,
    run_duration_ms,
    time_ago,
)
from kpi_store.source_schema import TableInfo, quote_name
from kpi_store.story_records import UnusualCheck
from kpi_store.validation import field_label

from .actions import act, ask_to_confirm, asking, confirmed, deferred
from .alert_look import ALERT_STYLE, NOTICE_STYLE, alert_badge, notice_badge, state_word
from .alerts_view import rules_tab
from .app import (
    _store_for,
    _worker_for,
    app_store,
    embedded_worker_enabled,
    ensure_app_navigation,
    gate_navigation,
    get_store,
    navigation,
    process_store,
    store_url,
    worker_running,
)
from .channels_view import channels_tab
from .charts import events_chart, runs_frame, time_format
from .downloads import download_routes, export_url, file_stem, full_export_link
from .grid import GridView, column_types, grid_view, result_grid
from .identity import (
    ACTOR_KEY,
    Viewer,
    current_actor,
    gate_page,
    identify,
    identity_sidebar,
    locked,
    recheck,
    require_actor,
    unverified,
    viewer,
)
from .links import (
    PAGES,
    Page,
    follow_query_param,
    kpi_link,
    link,
    open_on_rerun,
    page_url,
    query_int,
    run_link,
    run_url,
    set_query_param,
    switch_to,
)
from .look import ICON_SVG, LOGO_SVG, RAG_STYLE, STATUS_STYLE, page_style, rag_label, status_label
from .messages import (
    field_error,
    field_errors,
    flash,
    forget_error,
    friendly_errors,
    md,
    md_delta,
    plain,
    remember_error,
    remembered_errors,
    show_error,
    show_flash,
    show_remembered_error,
)
from .schedules_view import schedules_tab
from .story_form import official_and_period_section
from .story_view import what_changed_panel
from .trend import trend_tab
from .widgets import (
    AGGREGATION_LABELS,
    DIRECTION_LABELS,
    PARAM_TYPE_LABELS,
    facts_grid,
    field_text,
    kpi_card,
    kpi_label,
    number_text,
    parameter_form,
    parameter_text,
    rag_badge,
    status_badge,
)

__all__ = [
    "ACTOR_KEY", "ICON_SVG", "KPI", "LOGO_SVG", "MISSING", "PAGES", "RAG", "RAG_STYLE",
    "STATUS_STYLE", "Aggregation", "AuditAction", "BatchResult", "DataSource", "Direction",
    "CompareTo", "Execution", "Grain", "Headline", "KPIStatus", "KPIStore", "KPIStoreError",
    "KPIVersion", "Page",
    "ParamType", "ParameterSpec", "PermissionDeniedError", "Person", "Role", "RunMode",
    "RunStatus", "VersionConflictError", "Viewer", "gate_navigation", "gate_page",
    "identify", "locked", "recheck", "unverified", "viewer",
    "_store_for", "_worker_for", "act", "app_store", "as_text", "ask_to_confirm", "asking",
    "confirmed",
    "current_actor", "deferred", "download_routes", "embedded_worker_enabled",
    "ensure_app_navigation", "events_chart", "export_url", "facts_grid", "field_error",
    "field_errors", "file_stem", "flash", "follow_query_param", "forget_error",
    "format_change", "format_duration", "format_number", "format_params", "format_time",
    "format_value", "friendly_errors", "full_export_link", "get_store", "GridView",
    "column_types", "grid_view",
    "identity_sidebar", "kpi_card", "kpi_label", "kpi_link", "link", "md", "md_delta",
    "navigation", "official_and_period_section", "plain", "trend_tab", "what_changed_panel",
    "open_on_rerun", "page_style", "page_url", "parameter_form", "process_store",
    "query_int", "rag_badge", "rag_label", "remember_error", "remembered_errors",
    "require_actor", "result_grid", "run_duration_ms", "run_link", "run_url",
    "runs_frame", "set_query_param", "show_error", "show_flash", "show_remembered_error",
    "status_badge", "status_label", "store_url", "switch_to", "time_ago", "time_format",
    "worker_running",
    "AGGREGATION_LABELS", "DIRECTION_LABELS", "PARAM_TYPE_LABELS", "EditOnTop", "TableInfo",
    "edit_on_top", "field_label", "field_text", "number_text", "parameter_text",
    "quote_name",
    "ALERT_STYLE", "KPIAlerts", "NOTICE_STYLE", "UnusualCheck", "alert_badge", "channels_tab",
    "notice_badge",
    "rules_tab", "schedules_tab", "state_word",
]  # fmt: skip
