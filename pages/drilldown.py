"""Drill-down: one run's facts and its rows, a page at a time, with CSV downloads."""

from __future__ import annotations

import datetime as dt

import streamlit as st

import kpi_ui as ui

store = ui.get_store()
me = ui.viewer()

PAGE_SIZES = [25, 50, 100, 250, 500, 1000]
EXPORT_HELP = "Enter your name in the sidebar: exports are recorded in the audit log."

st.title("Drill-down")
st.caption(
    "Every row behind a KPI value. Sorting or filtering a column in the grid applies to "
    "every row of the run, and the downloads follow it."
)

names: dict[int, str] = {}
units: dict[int, str] = {}
recent: list[ui.Execution] = []
with ui.friendly_errors():
    for kpi in store.list_kpis(include_archived=True, actor=me.actor):
        names[kpi.id], units[kpi.id] = kpi.name, kpi.unit
    recent = store.executions(limit=200, actor=me.actor)

by_id = {e.id: e for e in recent}
wanted = ui.query_int("execution")
if wanted is not None and wanted not in by_id:
    with ui.friendly_errors():
        by_id[wanted] = store.execution(wanted, actor=me.actor)
    if wanted not in by_id:  # unknown or not theirs: say so (above) and stay on that link
        ui.link(ui.Page.DRILLDOWN, "Choose a run", ":material/table_view:")
        st.stop()

if not by_id:
    st.info("No runs yet: run a KPI and its rows will appear here.", icon=":material/lightbulb:")
    ui.link(ui.Page.RUN, "Run a KPI", ":material/play_arrow:")
    st.stop()


def run_label(execution_id: int) -> str:
    e = by_id[execution_id]
    name = names.get(e.kpi_id, f"KPI #{e.kpi_id}")
    when = ui.format_time(e.finished_at or e.created_at)
    return f"#{e.id} · {name} · {ui.status_label(e.status)} · {when}"


options = sorted(by_id, reverse=True)
ui.follow_query_param("dd_run", "execution", options)
chosen = st.selectbox("Run", options, format_func=run_label, key="dd_run")
ui.set_query_param("execution", chosen)

run = by_id[chosen]
unit = units.get(run.kpi_id, "")
name = names.get(run.kpi_id, f"KPI #{run.kpi_id} (deleted)")

# -- facts ------------------------------------------------------------------------------

head, badge = st.columns([5, 1], vertical_alignment="center")
head.header(f"{ui.md(name)} · version {run.kpi_version}", anchor=False)
with badge:
    ui.status_badge(run.status)

m = st.columns([2.2, 1, 1, 1, 1.3])
m[0].metric("Value", ui.md(ui.format_value(run.value, unit)))
m[1].metric("Rows", ui.format_number(run.row_count))
m[2].metric("Duration", ui.format_duration(ui.run_duration_ms(run)))
m[3].metric("Attempts", f"{run.attempts} of {run.max_retries + 1}")
m[4].metric("Requested by", ui.md(run.requested_by))

mode = "background" if run.mode == ui.RunMode.BACKGROUND else "now"
facts = {
    "KPI": f"{name} (#{run.kpi_id}), version {run.kpi_version}",
    "Parameters": ui.format_params(run.params),
    "Requested by": f"{run.requested_by} ({mode})",
    "Queued": ui.format_time(run.created_at),
    "Started": ui.format_time(run.started_at),
    "Finished": ui.format_time(run.finished_at),
    "Time limit": f"{run.timeout_s:g} s",
    "Truncated": "yes — only the first rows were kept" if run.truncated else "no",
}
if run.batch_id:
    facts["Batch"] = run.batch_id
# The rows (or why there are none) come before the details: on a phone the grid is then
# within reach, not below two screens of facts.
rows_area = st.container()
with st.expander("Run details", expanded=True, icon=":material/info:"):
    ui.facts_grid(facts)
    if run.kpi_id in names:
        ui.kpi_link(run.kpi_id, "All runs of this KPI", ui.Page.HISTORY, ":material/timeline:")

if run.truncated:
    rows_area.warning(
        f"This result was cut at {run.row_count:,} rows (the row limit); the value covers "
        "the stored rows only.",
        icon=":material/content_cut:",
    )

if not run.finished:

    @st.fragment(run_every=dt.timedelta(seconds=2))
    def wait_for_run() -> None:
        current = store.execution(run.id, actor=me.actor)
        if current.finished:
            st.rerun(scope="app")
        st.info(
            f"{ui.status_label(current.status)} · {current.rows_read:,} rows read so far. "
            "This page refreshes by itself.",
            icon=":material/hourglass_top:",
        )

    with rows_area:
        wait_for_run()
    st.stop()

if run.status != ui.RunStatus.SUCCESS:
    rows_area.error(ui.md(run.error or f"The run ended as {run.status}."), icon=":material/error:")
    st.stop()

if not run.row_count:
    rows_area.info("The query returned no rows.", icon=":material/inbox:")
    st.stop()

if run.rows_pruned_at is not None:  # retention removed the rows: say when and why
    with ui.friendly_errors():
        note = store.rows_removed_note(run.id, actor=me.actor)
        rows_area.info(ui.md(note), icon=":material/auto_delete:")
    st.stop()

# -- rows -------------------------------------------------------------------------------

grid_key, view_key = f"dd_grid_{run.id}", f"dd_view_{run.id}"
size_key, page_key = f"dd_size_{run.id}", f"dd_page_{run.id}"
column_types = ui.column_types(run)
actor = me.actor if me.may(ui.Role.RUNNER) else ""
stem = ui.file_stem(name)


@st.fragment
def rows_and_downloads() -> None:
    """The grid, its pager and the downloads: a page flip, a page-size change or a sort
    or filter in the grid redraws only this part of the page."""
    ui.recheck(store)
    view = ui.grid_view(grid_key, column_types)
    if st.session_state.get(view_key) != view:  # a new sort or filter: back to page 1
        st.session_state[view_key] = view
        st.session_state[page_key] = 1
    st.session_state.setdefault(page_key, 1)
    st.session_state.setdefault(size_key, 50)
    result = None
    with ui.friendly_errors():
        result = store.result_page(
            run.id,
            1,
            int(st.session_state[size_key]),
            view.sort_list(),
            view.filter_dicts(),
            actor=me.actor,
        )
    if result is None:
        return
    pages = result.total_pages
    if st.session_state[page_key] > pages:
        st.session_state[page_key] = pages
    page, size = pager(pages)
    frame = None
    with ui.friendly_errors():
        frame = store.result_frame(
            run.id, page, size, view.sort_list(), view.filter_dicts(), actor=me.actor
        )
    if frame is None:
        return
    first = (page - 1) * size + 1
    shown = (
        f"Rows {first:,}–{first + len(frame) - 1:,} of {result.total:,}"
        if len(frame)
        else ("No rows match these filters")
    )
    if view.filters:
        shown += f" (filtered from {run.row_count:,})"
    if view.sort:
        shown += " · sorted by " + ", ".join(f"{c} {d}" for c, d in view.sort)
    st.caption(shown)
    ui.result_grid(frame, grid_key, column_types)
    downloads(view, page, size, len(frame), result.total)


def pager(pages: int) -> tuple[int, int]:
    """Previous / page number / Next / rows per page; returns (page, page size)."""

    def step(delta: int) -> None:
        st.session_state[page_key] = min(pages, max(1, st.session_state[page_key] + delta))

    controls = st.container(horizontal=True, vertical_alignment="bottom", gap="small")
    controls.button(
        "Previous",
        icon=":material/chevron_left:",
        key=f"dd_prev_{run.id}",
        on_click=step,
        args=(-1,),
        disabled=st.session_state[page_key] <= 1,
    )
    page = int(
        controls.number_input(
            f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key=page_key, width=170
        )
    )
    controls.button(
        "Next",
        icon=":material/chevron_right:",
        icon_position="right",
        key=f"dd_next_{run.id}",
        on_click=step,
        args=(1,),
        disabled=page >= pages,
    )
    size = controls.selectbox("Rows per page", PAGE_SIZES, key=size_key, width=150)
    return page, int(size)


def downloads(view: ui.GridView, page: int, size: int, on_page: int, total: int) -> None:
    # Spreadsheet-safe unless the person asks for the exact values (the toggle below,
    # whose value is in the session state before this run reaches it).
    excel = not st.session_state.get("dd_exact", False)
    sort, filters = view.sort_list(), view.filter_dicts()
    everything = f"Download CSV (all {run.row_count:,} rows)"
    bar = st.container(horizontal=True, vertical_alignment="center")
    with bar:
        if not actor:
            st.download_button(
                everything,
                data=b"",
                icon=":material/download:",
                type="primary",
                key=f"dd_dl_all_{run.id}",
                disabled=True,
                help=EXPORT_HELP,
            )
        elif view.active:  # links the server streams every row through, never in memory
            label = f"Download CSV (these {total:,} rows, {view.describe()})"
            ui.full_export_link(store, run, name, actor, excel, label, sort, filters)
            ui.full_export_link(store, run, name, actor, excel, everything)
        else:
            ui.full_export_link(store, run, name, actor, excel, everything)
        if actor:
            other_formats(view, total)
    bar.download_button(
        f"Download this page ({on_page:,} rows)",
        data=ui.deferred(store.page_csv, run.id, page, size, excel, sort, filters, actor=actor),
        file_name=f"{stem}-run-{run.id}-page-{page}.csv",
        mime="text/csv",
        icon=":material/download:",
        key=f"dd_dl_page_{run.id}",
        on_click="ignore",
        disabled=not actor,
        help="Recorded in the audit log." if actor else EXPORT_HELP,
    )
    bar.toggle(
        "Exact values (not spreadsheet-safe)",
        key="dd_exact",
        help="Off (the default): spreadsheet-safe CSV. A byte-order mark makes Excel read "
        "accents correctly, and text cells that a spreadsheet would run as formulas "
        "(starting with =, +, -, @, a tab or a line break) get a leading apostrophe. On: "
        "every value exactly as stored, for scripts and other tools.",
    )
    if not me.actor:
        st.caption(
            ":orange[Enter your name in the sidebar to download rows: exports are "
            "recorded in the audit log.]"
        )
    elif not actor:
        ui.locked(ui.Role.RUNNER, "export rows")


def other_formats(view: ui.GridView, total: int) -> None:
    """Excel and Parquet files of what the grid shows (every row of it), streamed."""
    sort, filters = view.sort_list(), view.filter_dicts()
    what = f"these {total:,} rows" if view.active else f"all {total:,} rows"
    with st.popover("Excel or Parquet", icon=":material/file_download:"):
        st.caption(f"Files of {what}, typed as the run recorded them. Recorded in the audit log.")
        for kind, label in (("xlsx", "Excel workbook (.xlsx)"), ("parquet", "Parquet (.parquet)")):
            ui.full_export_link(store, run, name, actor, False, label, sort, filters, kind)


with rows_area:
    rows_and_downloads()
