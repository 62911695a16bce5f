"""History of one KPI: its series over time (the official one first), its runs, its
versions, and two runs side by side.

It opens on the KPI the link names (``?kpi=``), else on the KPI last open on the KPIs
page. Values in the tables are written with the KPI's unit, fields by their labels.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import streamlit as st

import kpi_ui as ui
from kpi_store import DiffPage, RunDiff

store = ui.get_store()
me = ui.viewer()

st.title("History")
ui.show_flash()

kpis: list[ui.KPI] = []
with ui.friendly_errors():
    kpis = store.list_kpis(include_archived=True, actor=me.actor)
if not kpis:
    st.info("No KPIs yet.", icon=":material/lightbulb:")
    ui.link(ui.Page.KPIS, "Create a KPI", ":material/add_circle:")
    st.stop()
by_id = {k.id: k for k in kpis}
LAST_KPI = "kpi_last_opened"  # set by the KPIs page (and here): the KPI you came from

if "hi_kpi" not in st.session_state and st.session_state.get(LAST_KPI) in by_id:
    st.session_state["hi_kpi"] = st.session_state[LAST_KPI]
ui.follow_query_param("hi_kpi", "kpi", list(by_id))
selected = st.selectbox(
    "KPI", list(by_id), format_func=lambda i: ui.kpi_label(by_id[i]), key="hi_kpi"
)
ui.set_query_param("kpi", selected)
st.session_state[LAST_KPI] = selected
kpi = by_id[selected]

head, links = st.columns([4, 3], vertical_alignment="center")
target = ui.format_value(kpi.target, kpi.unit) if kpi.target is not None else "none"
head.text(f"Version {kpi.version} · {kpi.status} · owner {kpi.owner or '—'} · target {target}")
with links:
    l1, l2, l3 = st.columns(3)
    with l1:
        ui.kpi_link(kpi.id, "Edit", ui.Page.KPIS, ":material/edit:")
    with l2:
        ui.kpi_link(kpi.id, "Run", ui.Page.RUN, ":material/play_arrow:")
    with l3:  # schedules, alert rules and subscribing to them, for this KPI
        ui.kpi_link(kpi.id, "Alerts", ui.Page.ALERTS, ":material/notifications:")

runs: list[ui.Execution] = []
versions: list[ui.KPIVersion] = []
with ui.friendly_errors():
    runs = store.executions(kpi_id=kpi.id, limit=500, actor=me.actor)
    versions = store.kpi_versions(kpi.id, actor=me.actor)

tab_trend, tab_runs, tab_versions, tab_compare = st.tabs(
    [
        ":material/show_chart: Trend",
        f":material/list: Runs ({len(runs)})",
        f":material/history: Versions ({len(versions)})",
        ":material/compare_arrows: Compare runs",
    ]
)


def run_choice(run: ui.Execution) -> str:
    return (
        f"#{run.id} · {ui.status_label(run.status)} · {ui.format_value(run.value, kpi.unit)} · "
        f"{ui.format_time(run.finished_at or run.created_at)}"
    )


# -- runs -------------------------------------------------------------------------------


def runs_tab() -> None:
    if not runs:
        st.info("This KPI has not been run yet.", icon=":material/play_circle:")
        return
    table = ui.runs_frame(runs)
    table["open"] = [ui.run_url(r.id) for r in runs]
    table["status"] = table["status"].map(ui.status_label)
    table["value"] = [ui.format_value(r.value, kpi.unit) for r in runs]
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "run": st.column_config.NumberColumn("Run", width="small"),
            "when": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "value": "Value",
            "status": "Status",
            "version": st.column_config.NumberColumn("Version", width="small"),
            "params": "Parameters",
            "rows": st.column_config.NumberColumn("Rows", format="localized"),
            "duration": "Duration",
            "by": "By",
            "open": st.column_config.LinkColumn("Drill-down", display_text="Open"),
        },
    )
    by_run = {r.id: r for r in runs}
    pick = st.selectbox(
        "Open a run",
        list(by_run),
        format_func=lambda i: run_choice(by_run[i]),
        key=f"hi_open_{kpi.id}",
    )
    ui.run_link(pick)


with tab_trend:
    ui.trend_tab(store, kpi, me)
with tab_runs:
    runs_tab()

# -- versions ---------------------------------------------------------------------------

VERBS = {"create": "Created", "update": "Changed", "restore": "Restored"}


def version_timeline() -> None:
    with st.container(border=True, key="hi_version_timeline"):
        for v in versions[:100]:
            badge, text = st.columns([1, 11], vertical_alignment="center")
            with badge:
                st.badge(f"v{v.version}", color="blue" if v.version == kpi.version else "gray")
            note = f" — _{ui.md(v.note)}_" if v.note else ""
            text.markdown(
                f"{VERBS.get(v.action, v.action.title())} by **{ui.md(v.changed_by)}** · "
                f"{ui.format_time(v.changed_at)} ({ui.time_ago(v.changed_at)}){note}"
            )
        if len(versions) > 100:
            st.caption(f"… and {len(versions) - 100} older versions.")


def version_diff(numbers: list[int]) -> None:
    st.markdown("**Compare two versions**")
    c1, c2 = st.columns(2)
    a = c1.selectbox("From version", numbers, index=1, key=f"hi_va_{kpi.id}")
    b = c2.selectbox("To version", numbers, index=0, key=f"hi_vb_{kpi.id}")
    units = {v.version: v.spec.unit for v in versions}
    with ui.friendly_errors():
        diff = store.diff_versions(kpi.id, a, b, actor=me.actor)
        if not diff.changes:
            st.caption("These two versions are identical.")
            return
        rows = [
            {
                "Field": ui.field_label(c.field),
                f"Version {a}": ui.field_text(c.field, c.before, units.get(a, kpi.unit)),
                f"Version {b}": ui.field_text(c.field, c.after, units.get(b, kpi.unit)),
            }
            for c in diff.changes
            if c.field != "sql"
        ]
        if diff.sql_diff:
            label = ui.field_label("sql")
            rows.append({"Field": label, f"Version {a}": "see below", f"Version {b}": "see below"})
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        if diff.sql_diff:
            st.code(diff.sql_diff, language="diff")


def restore_version(numbers: list[int]) -> None:
    st.markdown("**Restore an older version**")
    older = [n for n in numbers if n != kpi.version]
    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
    target = c1.selectbox("Version to restore", older, key=f"hi_restore_{kpi.id}")
    if c2.button(
        "Restore…",
        icon=":material/restore:",
        key="hi_restore_btn",
        disabled=kpi.status != ui.KPIStatus.ACTIVE or not me.may(ui.Role.EDITOR),
        help=me.refusal(ui.Role.EDITOR, "restore a version"),
    ):
        ui.ask_to_confirm("hi_restore", (kpi.id, target))
    question = (
        f"Restore version {target}? It is saved as a new version {kpi.version + 1}; "
        "nothing in the history is removed."
    )
    if ui.confirmed("hi_restore", (kpi.id, target), question, "Yes, restore", ":material/restore:"):
        ui.act(
            "restore a version",
            lambda actor: store.restore_version(kpi.id, target, actor),
            done=lambda restored: f"Version {target} restored as version {restored.version}.",
        )


with tab_versions:
    version_timeline()
    numbers = [v.version for v in versions]
    if len(numbers) < 2:
        st.caption("Only one version so far: edit the KPI to create another.")
    else:
        version_diff(numbers)
        restore_version(numbers)

# -- compare two runs -------------------------------------------------------------------


def compare_rows(first: ui.Execution, second: ui.Execution) -> list[tuple[str, Any, Any]]:
    unit = kpi.unit
    rows: list[tuple[str, Any, Any]] = [
        ("Value", ui.format_value(first.value, unit), ui.format_value(second.value, unit)),
        ("Status", ui.status_label(first.status), ui.status_label(second.status)),
        ("KPI version", first.kpi_version, second.kpi_version),
        ("Row count", ui.format_number(first.row_count), ui.format_number(second.row_count)),
        ("Truncated", first.truncated, second.truncated),
        (
            "Duration",
            ui.format_duration(first.execution_time_ms),
            ui.format_duration(second.execution_time_ms),
        ),
        ("Requested by", first.requested_by, second.requested_by),
        ("Finished (UTC)", ui.format_time(first.finished_at), ui.format_time(second.finished_at)),
    ]
    for name in dict.fromkeys([*first.params, *second.params]):
        rows.append((f"Parameter {name}", first.params.get(name), second.params.get(name)))
    return rows


def compare_tab() -> None:
    if len(runs) < 2:
        st.caption("Compare needs at least two runs of this KPI.")
        return
    by_run = {r.id: r for r in runs}

    def label(i: int) -> str:
        r = by_run[i]
        when = ui.format_time(r.finished_at or r.created_at)
        return f"#{r.id} · {ui.status_label(r.status)} · {when}"

    c1, c2 = st.columns(2)
    first = by_run[
        c1.selectbox("Run A", list(by_run), index=1, format_func=label, key=f"hi_ra_{kpi.id}")
    ]
    second = by_run[
        c2.selectbox("Run B", list(by_run), index=0, format_func=label, key=f"hi_rb_{kpi.id}")
    ]
    frame = pd.DataFrame(
        [
            {
                "": f,
                f"Run #{first.id}": ui.as_text(x),
                f"Run #{second.id}": ui.as_text(y),
                "Differs": "●" if ui.as_text(x) != ui.as_text(y) else "",
            }
            for f, x, y in compare_rows(first, second)
        ]
    )
    st.dataframe(frame, hide_index=True, width="stretch")
    if first.series_key != second.series_key:
        st.warning(
            "These runs have different parameters, so they belong to different series: "
            "the change below compares two different questions, not one number over time.",
            icon=":material/call_split:",
        )
    if first.value is not None and second.value is not None:
        change = second.value - first.value
        pct = f" ({change / first.value:+.1%})" if first.value else ""
        st.metric(
            f"Run #{second.id} vs run #{first.id}",
            ui.md(ui.format_value(second.value, kpi.unit)),
            delta=ui.md_delta(
                f"{'+' if change >= 0 else ''}{ui.format_value(change, kpi.unit)}{pct}"
            ),
            delta_color="normal" if kpi.direction == ui.Direction.HIGHER_IS_BETTER else "inverse",
        )

    row_diff(first, second)
    ui.what_changed_panel(store, kpi, first, second, me)


# -- the rows of two runs, matched by a key ----------------------------------------------

CATEGORIES = {
    "changed": "Changed",
    "only_in_a": "Only in run A",
    "only_in_b": "Only in run B",
}
DIFF_PAGE_SIZE = 50


def diff_csv(a: int, b: int, key: list[str], excel: bool, actor: str) -> bytes:
    buffer = io.BytesIO()
    store.export_diff_csv(a, b, key, buffer, actor, excel=excel)
    return buffer.getvalue()


def row_diff(first: ui.Execution, second: ui.Execution) -> None:
    """Rows only in A, only in B and changed, matched by the key columns chosen here."""
    st.markdown("**Compare rows**")
    if first.status != ui.RunStatus.SUCCESS or second.status != ui.RunStatus.SUCCESS:
        st.caption("Rows can be compared between two successful runs.")
        return
    names_b = {c.name for c in second.columns}
    shared = [c.name for c in first.columns if c.name in names_b]
    if not shared:
        st.caption("These two runs have no column in common to match rows by.")
        return
    key: list[str] = st.multiselect(
        "Match rows by", shared, default=shared[:1], key=f"hi_dkey_{first.id}_{second.id}"
    )
    if not key:
        st.caption("Choose the columns that identify a row.")
        return
    slot = (first.id, second.id, tuple(key))
    if st.session_state.get("hi_diff_of") != slot:
        if not st.button("Compare rows", icon=":material/difference:", key="hi_diff_go"):
            return
        st.session_state["hi_diff_of"] = slot
        st.session_state.pop("hi_diff", None)
    diff: RunDiff | None = st.session_state.get("hi_diff")
    if diff is None:
        with ui.friendly_errors(), st.spinner("Comparing every row…"):
            diff = store.diff_runs(first.id, second.id, key, actor=me.actor)
            st.session_state["hi_diff"] = diff
        if diff is None:
            st.session_state.pop("hi_diff_of", None)
            return
    diff_summary(diff)
    if diff.identical:
        st.caption("Every row matches.")
        return
    diff_pages(diff, key)


def diff_summary(diff: RunDiff) -> None:
    """How the runs differ: their settings, their columns, the counts, the match per column."""
    if diff.settings_differ:
        said = "; ".join(
            f"{'parameter ' + s.name if s.name else s.what.replace('_', ' ')}: "
            f"A {ui.as_text(s.a)}, B {ui.as_text(s.b)}"
            for s in diff.settings
        )
        st.warning(ui.md(f"The runs were run differently: {said}."), icon=":material/warning:")
    if diff.columns_only_in_a or diff.columns_only_in_b:
        st.caption(
            ui.md(
                "Columns only in A: "
                f"{', '.join(diff.columns_only_in_a) or 'none'}; only in B: "
                f"{', '.join(diff.columns_only_in_b) or 'none'} (they differ on every row)."
            )
        )
    counts = st.columns(4)
    counts[0].metric("Changed", ui.format_number(diff.changed))
    counts[1].metric("Only in run A", ui.format_number(diff.only_in_a))
    counts[2].metric("Only in run B", ui.format_number(diff.only_in_b))
    counts[3].metric("Unchanged", ui.format_number(diff.unchanged))
    matches = pd.DataFrame(
        [
            {
                "Column": c.column,
                "In A": c.in_a,
                "In B": c.in_b,
                "Match %": c.percent,
            }
            for c in diff.columns
        ]
    )
    st.dataframe(
        matches,
        hide_index=True,
        width="stretch",
        key="hi_diff_columns",
        column_config={"Match %": st.column_config.NumberColumn(format="%.2f %%")},
    )


def diff_pages(diff: RunDiff, key: list[str]) -> None:
    category = st.radio(
        "Show",
        list(CATEGORIES),
        format_func=lambda c: f"{CATEGORIES[c]} ({diff.count(c):,})",
        horizontal=True,
        key="hi_diff_category",
    )
    total = diff.count(category)
    pages = max(1, -(-total // DIFF_PAGE_SIZE))
    number = int(st.number_input("Page", 1, pages, 1, key=f"hi_diff_page_{category}", width=160))
    with ui.friendly_errors():
        found = store.diff_page(
            diff.run_a, diff.run_b, key, category, number, DIFF_PAGE_SIZE, actor=me.actor
        )
        st.dataframe(
            diff_frame(found, key),
            hide_index=True,
            width="stretch",
            key="hi_diff_rows",
        )
        st.caption(f"Page {number} of {pages:,}, in key order.")
    actor = me.actor if me.may(ui.Role.RUNNER) else ""
    excel = st.toggle("Spreadsheet-safe CSV", value=True, key="hi_diff_excel")
    st.download_button(
        "Download the differences (CSV)",
        data=ui.deferred(diff_csv, diff.run_a, diff.run_b, key, excel, actor),
        file_name=f"diff-run-{diff.run_a}-run-{diff.run_b}.csv",
        mime="text/csv",
        icon=":material/download:",
        key="hi_diff_csv",
        on_click="ignore",
        disabled=not actor,
        help=(
            "Key, category, column, value in A, value in B. Recorded in the audit log."
            if actor
            else me.refusal(ui.Role.RUNNER, "export rows")
        ),
    )


def diff_frame(found: DiffPage, key: list[str]) -> pd.DataFrame:
    """A changed row: one line per differing column; a row in one run only: its values."""
    lines: list[dict[str, Any]] = []
    for row in found.rows:
        keyed = {f"Key {k}": ui.as_text(v) for k, v in zip(key, row.key, strict=False)}
        if found.category == "changed":
            for name in row.columns:
                lines.append(
                    {
                        **keyed,
                        "Column": name,
                        "In run A": ui.as_text((row.a or {}).get(name)),
                        "In run B": ui.as_text((row.b or {}).get(name)),
                    }
                )
        else:
            values = row.a if found.category == "only_in_a" else row.b
            lines.append({**keyed, **{n: ui.as_text(v) for n, v in (values or {}).items()}})
    return pd.DataFrame(lines)


with tab_compare:
    compare_tab()
