"""Overview: a card per active KPI, filters, and "Run all" in the background."""

from __future__ import annotations

import datetime as dt

import streamlit as st

import kpi_ui as ui

store = ui.get_store()

st.title("Overview")
ui.show_flash()

kpis = []
with ui.friendly_errors():
    kpis = store.list_kpis()

if not kpis:
    st.info(
        "No KPIs yet. Define your first KPI, or load the demo: a small retail warehouse "
        "with eight sample KPIs.",
        icon=":material/lightbulb:",
    )
    c1, c2, _ = st.columns([1, 1, 3])
    with c1:
        st.page_link(ui.PAGES["kpis"], label="Create a KPI", icon=":material/add_circle:")
    if c2.button("Load the demo", icon=":material/storefront:", key="ov_demo"):
        actor = ui.require_actor("load the demo")
        if actor:
            try:
                with st.spinner("Building the demo warehouse…"):
                    added = store.install_demo(actor=actor)
            except ui.KPIStoreError as error:
                ui.show_error(error)
            else:
                ui.flash(f'Demo loaded: {len(added)} sample KPIs. Press "Run all" to compute them.')
                st.rerun()
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
    disabled=not shown,
    help="Queue every KPI shown, with its default parameters, in the background.",
)
if run_all:
    actor = ui.require_actor("run KPIs")
    if actor:
        try:
            batch = store.submit_batch([k.id for k in shown], actor=actor)
        except ui.KPIStoreError as error:
            ui.show_error(error)
        else:
            st.session_state["ov_batch"] = batch.batch_id
            for refusal in batch.errors:
                ui.flash(f"KPI #{refusal.kpi_id} was not queued: {refusal.message}", "warning")
            st.rerun()

batch_id = st.session_state.get("ov_batch")


@st.fragment(run_every=dt.timedelta(seconds=1.5))
def batch_progress() -> None:
    if not batch_id:
        return
    runs = store.executions(batch_id=batch_id, limit=None)
    done = [r for r in runs if r.finished]
    ok = sum(r.status == "success" for r in done)
    if len(done) < len(runs):
        st.progress(
            len(done) / max(1, len(runs)),
            text=f"Running {len(runs)} KPIs in the background: {len(done)} finished, "
            f"{ok} succeeded",
        )
        if not ui.worker_running():
            st.caption(
                ":orange[No background worker runs in this app; the runs wait for "
                "`python -m kpi_store worker`.]"
            )
        st.session_state["ov_batch_live"] = True
    else:
        failed = len(done) - ok
        message = f"Run all finished: {ok} of {len(runs)} succeeded"
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

recent = {}
with ui.friendly_errors():
    recent = store.latest_runs([k.id for k in shown], per_kpi=20)

counts = {"green": 0, "amber": 0, "red": 0, None: 0}
never = 0
for k in shown:
    latest = next((r for r in recent.get(k.id, []) if r.status == "success"), None)
    if latest is None:
        never += 1
    counts[k.rag_status(latest.value if latest else None)] += 1

s = st.columns(4)
s[0].metric("On target", counts["green"], border=True)
s[1].metric("Near target", counts["amber"], border=True)
s[2].metric("Off target", counts["red"], border=True)
s[3].metric("Not run yet", never, border=True)

per_row = 3
for start in range(0, len(shown), per_row):
    row = st.columns(per_row)
    for column, kpi in zip(row, shown[start : start + per_row], strict=False):
        with column:
            ui.kpi_card(kpi, recent.get(kpi.id, []))
