"""Overview: a card per active KPI, filters, and "Run all" in the background."""

from __future__ import annotations

import datetime as dt

import streamlit as st

import kpi_ui as ui

store = ui.get_store()
me = ui.viewer()

st.title("Overview")
ui.show_flash()

kpis: list[ui.KPI] = []
with ui.friendly_errors():
    kpis = store.list_kpis(actor=me.actor)

if not kpis and not me.may(ui.Role.EDITOR):
    st.info(
        "There are no KPIs open to you yet. An editor or an admin can add them, or give you "
        "access to their data sources.",
        icon=":material/lightbulb:",
    )
    st.stop()
if not kpis:
    st.info(
        "No KPIs yet. Define your first KPI, or load the demo: a small retail warehouse "
        "with eight sample KPIs.",
        icon=":material/lightbulb:",
    )
    c1, c2, _ = st.columns([1, 1, 3])
    with c1:
        ui.link(ui.Page.KPIS, "Create a KPI", ":material/add_circle:")
    if c2.button(
        "Load the demo",
        icon=":material/storefront:",
        key="ov_demo",
        disabled=not me.may(ui.Role.ADMIN),
        help=me.refusal(ui.Role.ADMIN, "load the demo"),
    ):
        ui.act(
            "load the demo",
            lambda actor: store.install_demo(actor=actor),
            spinner="Building the demo warehouse…",
            done=lambda added: (
                f'Demo loaded: {len(added)} sample KPIs. Press "Run all" to compute them.'
            ),
        )
    st.stop()

# -- filters and run all --------------------------------------------------------------------

tags = sorted({t for k in kpis for t in k.tags})
owners = sorted({k.owner for k in kpis if k.owner})
c1, c2, c3 = st.columns([3, 3, 2], vertical_alignment="bottom")
chosen_tags = c1.multiselect("Tags", tags, key="ov_tags", placeholder="All tags")
chosen_owners = c2.multiselect("Owners", owners, key="ov_owners", placeholder="All owners")
shown = [
    k
    for k in kpis
    if (not chosen_tags or set(chosen_tags) & set(k.tags))
    and (not chosen_owners or k.owner in chosen_owners)
]
run_all = c3.button(
    f"Run all ({len(shown)})",
    type="primary",
    icon=":material/play_circle:",
    key="ov_run_all",
    width="stretch",
    disabled=not shown or not me.may(ui.Role.RUNNER),
    help=me.refusal(ui.Role.RUNNER, "run KPIs")
    or "Queue every KPI shown, with its default parameters, in the background.",
)


def queued_all(batch: ui.BatchResult) -> str:
    st.session_state["ov_batch"] = batch.batch_id
    st.session_state["ov_batch_live"] = True
    for refusal in batch.errors:
        ui.flash(f"KPI #{refusal.kpi_id} was not queued: {ui.md(refusal.message)}", "warning")
    return ""


if run_all:
    ui.act(
        "run KPIs",
        lambda actor: store.submit_batch([k.id for k in shown], actor=actor),
        done=queued_all,
    )

batch_id = st.session_state.get("ov_batch")
polling = bool(batch_id) and st.session_state.get("ov_batch_live", False)


# Polls only while the batch it started runs: an idle tab costs nothing.
@st.fragment(run_every=dt.timedelta(seconds=1.5) if polling else None)
def batch_progress() -> None:
    ui.recheck(store)
    if not batch_id:
        return
    progress = store.batch_progress(batch_id, actor=me.actor)
    finished, ok = len(progress.finished), progress.succeeded
    if not progress.done:
        st.progress(
            progress.share_done,
            text=f"Running {progress.total} KPIs in the background: {finished} finished, "
            f"{ok} succeeded",
        )
        if not ui.worker_running():
            st.caption(
                ":orange[No background worker runs in this app; the runs wait for "
                "`python -m kpi_store worker`.]"
            )
        return
    failed = len(progress.failed)
    message = f"Run all finished: {ok} of {progress.total} succeeded"
    (st.success if not failed else st.warning)(
        message + (f", {failed} failed (see the Run page)." if failed else "."),
        icon=":material/task_alt:",
    )
    if st.session_state.pop("ov_batch_live", False):
        st.rerun(scope="app")  # refresh the cards once with the new values


batch_progress()

# -- summary and cards --------------------------------------------------------------------------

if not shown:
    st.info("No KPI matches these filters.", icon=":material/filter_alt_off:")
    st.stop()

headlines: dict[int, ui.Headline] = {}
alerts: dict[int, ui.KPIAlerts] = {}
unusual: dict[int, ui.UnusualCheck] = {}
with ui.friendly_errors():
    headlines = store.headlines(shown, actor=me.actor)
    alerts = store.alert_states([k.id for k in shown], actor=me.actor)
    latest = [h.latest.run_id for h in headlines.values() if h.latest]
    unusual = store.unusual_flags(latest, actor=me.actor)

counts = store.rag_counts(shown, headlines)
s = st.columns(5)
for column, rag in zip(s, ui.RAG, strict=False):
    column.metric(ui.rag_label(rag), counts[rag], border=True)
s[4].metric("Not run yet", counts.never_run, border=True)
st.caption(
    "Cards show each KPI's official number: its runs with the official parameters. "
    "Runs with other parameters are explorations, listed on its History page."
)

per_row = 3
for start in range(0, len(shown), per_row):
    row = st.columns(per_row)
    for column, kpi in zip(row, shown[start : start + per_row], strict=False):
        with column:
            headline = headlines.get(kpi.id)
            check = unusual.get(headline.latest.run_id) if headline and headline.latest else None
            ui.kpi_card(kpi, headline, alerts.get(kpi.id), check)
