"""Widgets and helpers shared by the KPI Desk pages.

Everything a page needs more than once lives here and nowhere else: the cached store
and embedded worker, the sidebar identity, friendly errors, deep links, the typed
parameter form, the paged result grid, the timeline charts, status badges and KPI cards.
Pages call only the ``KPIStore`` API; this module adds presentation and nothing else.

"""

from __future__ import annotations

import atexit
import datetime as dt
import io
import json
import logging
import os
import runpy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from kpi_store import KPI, Execution, KPIStore, KPIStoreError, ParameterSpec
from kpi_store.config import Settings
from kpi_store.errors import VersionConflictError

log = logging.getLogger("kpi_desk")

PAGES = {
    "overview": "pages/overview.py",
    "kpis": "pages/kpis.py",
    "run": "pages/run.py",
    "drilldown": "pages/drilldown.py",
    "history": "pages/history.py",
    "audit": "pages/audit.py",
    "data_sources": "pages/data_sources.py",
}

STATUS_STYLE: dict[str, tuple[str, str, str]] = {
    # status -> (label, badge colour, material icon)
    "pending": ("Queued", "violet", ":material/schedule:"),
    "running": ("Running", "blue", ":material/autorenew:"),
    "success": ("Success", "green", ":material/check_circle:"),
    "failed": ("Failed", "red", ":material/error:"),
    "timeout": ("Timed out", "orange", ":material/timer_off:"),
    "cancelled": ("Cancelled", "gray", ":material/block:"),
}
STATUS_COLOURS = {
    "success": "#16a34a",
    "failed": "#dc2626",
    "timeout": "#ea580c",
    "cancelled": "#6b7280",
    "running": "#2563eb",
    "pending": "#7c3aed",
}
RAG_STYLE: dict[str, tuple[str, str, str]] = {
    "green": ("On target", "green", ":material/check_circle:"),
    "amber": ("Near target", "orange", ":material/warning:"),
    "red": ("Off target", "red", ":material/error:"),
}
ACTIVE_STATUSES = ("pending", "running")


# -- store and worker -----------------------------------------------------------------


def store_url() -> str:
    return Settings.from_env().url


@st.cache_resource(show_spinner=False)
def _store_for(url: str) -> KPIStore:
    return KPIStore(url)


@st.cache_resource(show_spinner=False)
def _worker_for(url: str) -> Any:
    """One background worker per server process and store; ``None`` if unavailable."""
    try:
        from kpi_store import Worker  # type: ignore[attr-defined]
    except ImportError:
        log.warning("kpi_store.Worker is not available: background runs stay queued")
        return None
    worker = Worker(_store_for(url), concurrency=2)
    worker.start()
    atexit.register(worker.stop)
    return worker


def embedded_worker_enabled() -> bool:
    return os.environ.get("KPI_EMBEDDED_WORKER", "1").strip().lower() not in ("0", "false", "no")


APP_SCRIPT = Path(__file__).resolve().with_name("dashboard.py")


def ensure_app_navigation() -> None:
    """Render a page through ``dashboard.py`` when Streamlit ran it on its own.

    Until ``st.navigation`` has run once in a server process (and on every run of an
    ``AppTest``), Streamlit treats ``pages/`` as an old-style page folder: a first
    visitor arriving by a deep link such as ``/drilldown?execution=7`` would get the
    page alone, without the app's navigation, identity box or layout. Here the flag is
    cleared and ``dashboard.py`` runs in place; it calls ``st.navigation`` and renders
    this same page inside the app (widget values and the URL are kept, no rerun), and
    the stand-alone run stops.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        runpy.run_path(str(APP_SCRIPT), run_name="__main__")
        st.stop()


def get_store() -> KPIStore:
    """The store of this server process (cached per URL), with its embedded worker.

    Every page calls this first, so it also makes sure the page runs inside the app.
    """
    ensure_app_navigation()
    url = store_url()
    store = _store_for(url)
    if embedded_worker_enabled():
        _worker_for(url)
    return store


def worker_running() -> bool:
    if not embedded_worker_enabled():
        return False
    return _worker_for(store_url()) is not None


# -- look -----------------------------------------------------------------------------

_MARK = (
    '<rect x="1" y="1" width="34" height="34" rx="8" fill="#2563eb"/>'
    '<polyline points="8,25 15,17 21,21 28,10" fill="none" stroke="#fff" stroke-width="3" '
    'stroke-linecap="round" stroke-linejoin="round"/>'
    '<circle cx="28" cy="10" r="2.6" fill="#fff"/>'
)
LOGO_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="168" height="36" viewBox="0 0 168 36">'
    f"{_MARK}"
    '<text x="45" y="25" font-family="Source Sans Pro, Helvetica, Arial, sans-serif" '
    'font-size="21" font-weight="700" fill="#1f2937">KPI Desk</text></svg>'
)
ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="36" height="36" viewBox="0 0 36 36">'
    f"{_MARK}</svg>"
)

PAGE_CSS = """
<style>
[data-testid="stMainBlockContainer"] { padding-top: 2.2rem; }
textarea[aria-label="SQL"] { font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
                             font-size: 0.86rem; }
[data-testid="stMetricValue"] { font-size: 1.9rem; }
</style>
"""


def page_style() -> None:
    st.markdown(PAGE_CSS, unsafe_allow_html=True)


# -- identity ---------------------------------------------------------------------------

ACTOR_KEY = "actor"


def identity_sidebar() -> None:
    """The "who are you" box; its value is remembered for the browser session."""
    with st.sidebar:
        st.text_input(
            "Your name",
            key=ACTOR_KEY,
            placeholder="e.g. Alice Martin",
            help="Recorded as the author of every change and run you make.",
            max_chars=200,
        )
        if not current_actor():
            st.caption(":orange[:material/badge: Enter your name to make changes or run KPIs.]")


def current_actor() -> str:
    return str(st.session_state.get(ACTOR_KEY) or "").strip()


def require_actor(action: str = "do this") -> str | None:
    """The signed-in name, or a warning and ``None`` when nobody said who they are."""
    actor = current_actor()
    if not actor:
        st.warning(f"Enter your name in the sidebar to {action}.", icon=":material/badge:")
        return None
    return actor


# -- messages and errors ------------------------------------------------------------------


def flash(message: str, kind: str = "success") -> None:
    """A message shown once at the top of the next run (survives ``st.rerun``)."""
    st.session_state.setdefault("_flash", []).append((kind, message))


def show_flash() -> None:
    for kind, message in st.session_state.pop("_flash", []):
        getattr(st, kind)(message)


def show_error(error: Exception) -> None:
    """A store error as a friendly message: the text written for the user, no traceback."""
    icon = ":material/sync_problem:" if isinstance(error, VersionConflictError) else None
    st.error(str(error), icon=icon or ":material/error:")


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Show any ``KPIStoreError`` raised in the block as a message and carry on."""
    try:
        yield
    except KPIStoreError as error:
        show_error(error)


def field_errors(error: Exception | None) -> dict[str, str]:
    return dict(getattr(error, "field_errors", {}) or {})


def remember_error(slot: str, error: Exception) -> None:
    """Keep a failed save's message and field errors for the next run of the form."""
    st.session_state[f"{slot}_errors"] = field_errors(error)
    st.session_state[f"{slot}_message"] = str(error)


def remembered_errors(slot: str) -> dict[str, str]:
    return st.session_state.get(f"{slot}_errors", {})


def show_remembered_error(slot: str) -> None:
    message = st.session_state.get(f"{slot}_message")
    if message:
        st.error(message, icon=":material/error:")


def forget_error(slot: str) -> None:
    st.session_state.pop(f"{slot}_errors", None)
    st.session_state.pop(f"{slot}_message", None)


def field_error(errors: dict[str, str], *names: str) -> None:
    """Show the messages for ``names`` (and their sub-fields) under a widget."""
    shown = []
    for key, message in errors.items():
        if any(key == n or key.startswith(f"{n}.") or key.startswith(f"{n}[") for n in names):
            shown.append(message)
    for message in dict.fromkeys(shown):
        st.markdown(f":red[:material/error: {message}]")


# -- deep links -------------------------------------------------------------------------


def query_int(name: str) -> int | None:
    raw = st.query_params.get(name)
    try:
        value = int(str(raw)) if raw not in (None, "") else None
    except ValueError:
        return None
    return value if value is None or 1 <= value < 2**63 else None


def follow_query_param(key: str, name: str, options: Sequence[Any], as_list: bool = False) -> None:
    """Let the widget ``key`` follow ``?name=`` whenever the URL changes.

    Call before the widget is created. A shared link or a ``page_link`` with
    ``query_params`` sets the widget; choices made in the widget are written back with
    :func:`set_query_param`. ``None`` in ``options`` is chosen when the URL has no value.
    """
    raw = st.query_params.get(name)
    seen_key = f"_url_seen_{name}"
    unchanged = seen_key in st.session_state and raw == st.session_state[seen_key]
    if unchanged and key in st.session_state:
        return
    st.session_state[seen_key] = raw
    value = query_int(name)
    if value in options:
        st.session_state[key] = [value] if as_list and value is not None else value


def set_query_param(name: str, value: Any) -> None:
    """Write the current choice into the URL, so it can be shared."""
    text = None if value is None else str(value)
    if text is None:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != text:
        st.query_params[name] = text
    st.session_state[f"_url_seen_{name}"] = text


def open_on_rerun(name: str, value: Any) -> None:
    """Point ``?name=`` at ``value`` so the widget following it switches on the next run."""
    if value is None:
        if name in st.query_params:
            del st.query_params[name]
    else:
        st.query_params[name] = str(value)
    st.session_state.pop(f"_url_seen_{name}", None)


def kpi_link(kpi_id: int, label: str, page: str = "history", icon: str | None = None) -> None:
    st.page_link(PAGES[page], label=label, icon=icon, query_params={"kpi": str(kpi_id)})


def run_link(execution_id: int, label: str | None = None) -> None:
    st.page_link(
        PAGES["drilldown"],
        label=label or f"Open run #{execution_id} in the drill-down",
        icon=":material/table_view:",
        query_params={"execution": str(execution_id)},
    )


# -- formatting -------------------------------------------------------------------------


def format_number(value: float | int | None) -> str:
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def format_value(value: float | int | None, unit: str = "") -> str:
    """A KPI value with its unit: ``$5,506,100.50``, ``8.00 %`` → ``8 %``, ``19,117 orders``."""
    if value is None:
        return "—"
    text = format_number(value)
    unit = (unit or "").strip()
    if not unit:
        return text
    if unit in ("$", "€", "£", "¥"):
        return f"-{unit}{text[1:]}" if text.startswith("-") else f"{unit}{text}"
    if unit == "%":
        return f"{text}%"
    return f"{text} {unit}"


def format_time(moment: dt.datetime | None) -> str:
    """A stored (naive UTC) time as ``2025-03-01 14:05 UTC``."""
    if moment is None:
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def time_ago(moment: dt.datetime | None, now: dt.datetime | None = None) -> str:
    if moment is None:
        return "never"
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 60:
        return "just now"
    for size, word in ((86_400, "day"), (3_600, "hour"), (60, "minute")):
        if seconds >= size:
            n = seconds // size
            return f"{n} {word}{'s' if n != 1 else ''} ago"
    return "just now"


def format_duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1_000:
        return f"{ms:.0f} ms"
    seconds = ms / 1_000
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def format_params(params: dict[str, Any] | None) -> str:
    if not params:
        return "—"
    return ", ".join(f"{k}={v}" for k, v in params.items())


def run_duration_ms(execution: Execution, now: dt.datetime | None = None) -> float | None:
    """Duration of a finished run, or time since it started for a running one."""
    if execution.execution_time_ms is not None:
        return execution.execution_time_ms
    if execution.started_at is None:
        return None
    end = execution.finished_at or now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return (end - execution.started_at).total_seconds() * 1_000


# -- status -----------------------------------------------------------------------------


def status_label(status: str) -> str:
    return STATUS_STYLE.get(status, (status.title(), "gray", ""))[0]


def status_badge(status: str) -> None:
    label, colour, icon = STATUS_STYLE.get(status, (status.title(), "gray", None))
    st.badge(label, color=colour, icon=icon)  # type: ignore[arg-type]


def rag_badge(rag: str | None, has_target: bool = True) -> None:
    if rag is None:
        label = "Not run yet" if has_target else "No target"
        st.badge(label, color="gray", icon=":material/remove:")
        return
    label, colour, icon = RAG_STYLE[rag]
    st.badge(label, color=colour, icon=icon)  # type: ignore[arg-type]


# -- KPI card ---------------------------------------------------------------------------


def kpi_card(kpi: KPI, runs: Sequence[Execution]) -> None:
    """Headline value, delta, target and RAG status, sparkline and last run of one KPI.

    ``runs`` are the KPI's recent runs, newest first (any status).
    """
    successes = [r for r in runs if r.status == "success" and r.value is not None]
    latest = successes[0] if successes else None
    previous = successes[1] if len(successes) > 1 else None
    last_run = runs[0] if runs else None
    value = latest.value if latest else None
    with st.container(border=True, key=f"kpi_card_{kpi.id}"):
        head, badge = st.columns([3, 2], vertical_alignment="center")
        head.markdown(f"**{kpi.name}**")
        with badge:
            rag_badge(kpi.rag_status(value), kpi.target is not None)
        delta = None
        if latest is not None and previous is not None:
            change = latest.value - previous.value
            delta = ("+" if change >= 0 else "") + format_value(change, kpi.unit)
            if change == 0:
                delta = "no change"
        sparkline = [r.value for r in reversed(successes[:20])]
        st.metric(
            kpi.description or kpi.name,
            format_value(value, kpi.unit),
            delta=delta,
            delta_color="normal" if kpi.direction == "higher_is_better" else "inverse",
            chart_data=sparkline if len(sparkline) > 1 else None,
            chart_type="line",
            label_visibility="collapsed",
            delta_description="vs previous run" if delta else None,
        )
        target = format_value(kpi.target, kpi.unit) if kpi.target is not None else "none"
        st.caption(f"Target {target} · {kpi.owner or 'no owner'}")
        if last_run is None:
            st.caption(":material/history: Never run yet")
        else:
            label = status_label(last_run.status)
            st.caption(f":material/history: Last run {time_ago(last_run.created_at)} · {label}")
        links = st.columns(2)
        with links[0]:
            kpi_link(kpi.id, "History", "history", ":material/timeline:")
        with links[1]:
            if latest is not None:
                run_link(latest.id, "Rows")
            else:
                kpi_link(kpi.id, "Run", "run", ":material/play_arrow:")


# -- parameter form ---------------------------------------------------------------------


def parameter_form(
    parameters: Sequence[ParameterSpec],
    key_prefix: str,
    errors: dict[str, str] | None = None,
    columns: int = 3,
) -> dict[str, Any]:
    """One widget per parameter, of its type; returns ``{name: value}``.

    Dates get a date picker, numbers a number input, yes/no a toggle, parameters with
    choices a select box, text a text input. Empty values are left out so the store
    fills in the defaults (or says which value is missing).
    """
    errors = errors or {}
    values: dict[str, Any] = {}
    if not parameters:
        st.caption("This KPI has no parameters.")
        return values
    grid = st.columns(min(columns, len(parameters)))
    for index, param in enumerate(parameters):
        with grid[index % len(grid)]:
            key = f"{key_prefix}_{param.name}_{param.type}"
            values[param.name] = _parameter_widget(param, key)
            field_error(errors, param.name)
    return {k: v for k, v in values.items() if v is not None and v != ""}


def _parameter_widget(param: ParameterSpec, key: str) -> Any:
    label = param.label or param.name.replace("_", " ").capitalize()
    help_text = f"`:{param.name}` · {param.type}"
    default = param.default
    if param.choices:
        options = list(param.choices)
        index = options.index(default) if default in options else 0
        return st.selectbox(label, options, index=index, key=key, help=help_text)
    if param.type == "date":
        return st.date_input(label, value=default, key=key, help=help_text, format="YYYY-MM-DD")
    if param.type == "int":
        return st.number_input(label, value=default, step=1, key=key, help=help_text)
    if param.type == "float":
        value = None if default is None else float(default)
        return st.number_input(label, value=value, step=1.0, key=key, help=help_text)
    if param.type == "bool":
        return st.toggle(label, value=bool(default), key=key, help=help_text)
    return st.text_input(
        label, value="" if default is None else str(default), key=key, help=help_text
    )


# -- result grid ------------------------------------------------------------------------


def result_grid(frame: pd.DataFrame, key: str, height: int | None = None) -> None:
    """One page of rows in an AgGrid: sortable, filterable, resizable columns.

    The grid gets only this page (streamlit-aggrid has no server-side paging), so
    sorting and filtering apply within the page.
    """
    from st_aggrid import AgGrid, GridOptionsBuilder

    shown = grid_frame(frame)
    builder = GridOptionsBuilder.from_dataframe(shown)
    builder.configure_default_column(
        sortable=True, filter=True, resizable=True, minWidth=90, floatingFilter=False
    )
    for column in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(
            frame[column]
        ):
            builder.configure_column(column, type=["numericColumn", "numberColumnFilter"])
    strategy = "fitGridWidth" if len(shown.columns) <= 8 else "fitCellContents"
    builder.configure_grid_options(
        enableCellTextSelection=True, autoSizeStrategy={"type": strategy}
    )
    options = builder.build()
    rows = len(shown)
    AgGrid(
        shown,
        gridOptions=options,
        height=height or min(560, 48 + 34 * max(rows, 3)),
        theme="streamlit",
        key=key,
        show_toolbar=False,
        show_download_button=False,
        show_search=False,
    )


def grid_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy the grid renders well: plain Python values, ``None`` for missing, ISO times."""
    shown = frame.copy()
    for column in shown.columns:
        series = shown[column]
        if pd.api.types.is_datetime64_any_dtype(series):
            text = series.dt.strftime("%Y-%m-%d %H:%M:%S").str.replace(" 00:00:00", "")
            shown[column] = text.astype(object).where(series.notna(), None)
        elif isinstance(series.dtype, pd.api.extensions.ExtensionDtype) or series.dtype == object:
            shown[column] = series.astype(object).where(series.notna(), None)
    return shown


def export_bytes(store: KPIStore, execution_id: int, actor: str, excel: bool = False) -> bytes:
    """Every row of a run as CSV bytes, through the store's streaming export."""
    buffer = io.BytesIO()
    store.export_csv(execution_id, buffer, actor=actor, excel=excel)
    return buffer.getvalue()


def deferred(function: Callable[..., bytes], *args: Any, **kwargs: Any) -> Callable[[], bytes]:
    """A zero-argument callable for ``st.download_button(data=...)``: built on click only."""

    def build() -> bytes:
        return function(*args, **kwargs)

    return build


# -- charts -----------------------------------------------------------------------------


def runs_frame(runs: Sequence[Execution]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": r.id,
                "when": r.finished_at or r.created_at,
                "value": r.value,
                "status": r.status,
                "version": r.kpi_version,
                "params": format_params(r.params),
                "rows": r.row_count,
                "duration": format_duration(r.execution_time_ms),
                "by": r.requested_by,
            }
            for r in runs
        ],
        columns=["run", "when", "value", "status", "version", "params", "rows", "duration", "by"],
    )


def time_format(moments: pd.Series) -> str:
    """A d3 time format that tells ticks apart over the span of ``moments``."""
    moments = pd.to_datetime(moments.dropna())
    span = (moments.max() - moments.min()) if len(moments) else pd.Timedelta(0)
    if span < pd.Timedelta(minutes=10):
        return "%H:%M:%S"
    if span < pd.Timedelta(days=2):
        return "%b %d %H:%M"
    return "%b %d, %Y"


def runs_chart(runs: Sequence[Execution], target: float | None, unit: str = "") -> None:
    """Value over time; points coloured by status; the target as a dashed line."""
    frame = runs_frame(runs)
    if frame.empty:
        st.info("No runs yet.")
        return
    statuses = list(STATUS_COLOURS)
    colour = alt.Color(
        "status:N",
        scale=alt.Scale(domain=statuses, range=[STATUS_COLOURS[s] for s in statuses]),
        legend=alt.Legend(title="Status", orient="right"),
    )
    title = f"Value ({unit})" if unit else "Value"
    valued = frame.dropna(subset=["value"])
    x = alt.X("when:T", title="Run time (UTC)", axis=alt.Axis(format=time_format(frame["when"])))
    y = alt.Y("value:Q", title=title, scale=alt.Scale(zero=False), axis=alt.Axis(format=",.4~s"))
    layers = []
    if not valued.empty:
        line_data = valued[valued["status"] == "success"]
        layers.append(
            alt.Chart(line_data).mark_line(color="#94a3b8", strokeWidth=1.5).encode(x=x, y=y)
        )
    floor = valued["value"].min() if not valued.empty else 0
    points = frame.assign(value=frame["value"].fillna(floor))
    layers.append(
        alt.Chart(points)
        .mark_point(filled=True, size=90)
        .encode(
            x=x,
            y=y,
            color=colour,
            tooltip=["run", "status", "value", "params", "version", "rows", "by", "when:T"],
        )
    )
    if target is not None:
        layers.append(
            alt.Chart(pd.DataFrame({"target": [target]}))
            .mark_rule(color="#f59e0b", strokeDash=[6, 4], strokeWidth=2)
            .encode(y="target:Q", tooltip=[alt.Tooltip("target:Q", title="Target")])
        )
    st.altair_chart(alt.layer(*layers).properties(height=320), width="stretch")


def events_chart(frame: pd.DataFrame) -> None:
    """Audit events over time: one row per actor, coloured by action."""
    if frame.empty:
        return
    chart = (
        alt.Chart(frame)
        .mark_circle(size=110, opacity=0.85)
        .encode(
            x=alt.X("when:T", title="Time (UTC)", axis=alt.Axis(format=time_format(frame["when"]))),
            y=alt.Y("actor:N", title=None, sort="ascending"),
            color=alt.Color("action:N", legend=alt.Legend(title="Action", orient="right")),
            tooltip=["id", "when:T", "actor", "action", "kpi", "entity"],
        )
        .properties(height=max(200, 40 * frame["actor"].nunique() + 90))
    )
    st.altair_chart(chart, width="stretch")


# -- small tables -----------------------------------------------------------------------


def facts_grid(rows: dict[str, Any], columns: int = 4) -> None:
    """Labelled facts in a grid: a small grey label above each value."""
    items = list(rows.items())
    for start in range(0, len(items), columns):
        cells = st.columns(columns)
        for cell, (label, value) in zip(cells, items[start : start + columns], strict=False):
            cell.caption(label)
            cell.markdown(_display(value) or "—")


def _display(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def as_text(value: Any) -> str:
    return _display(value)


def kpi_label(kpi: KPI) -> str:
    suffix = " (archived)" if kpi.status == "archived" else ""
    return f"{kpi.name}{suffix}"
