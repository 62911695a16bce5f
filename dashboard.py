"""KPI Desk: ``streamlit run dashboard.py``.

The entry point: page config, navigation over the files in ``pages/``, the sidebar
identity, one ``KPIStore`` (plus the embedded background worker) per server process,
and deep links: ``/?kpi=ID`` opens that KPI, ``/?execution=ID`` opens that run.
"""

from __future__ import annotations

import streamlit as st

import kpi_ui as ui

st.set_page_config(
    page_title="KPI Desk",
    page_icon=":material/monitoring:",
    layout="wide",
    initial_sidebar_state="expanded",
)

pages = {
    "Metrics": [
        st.Page(ui.PAGES["overview"], title="Overview", icon=":material/dashboard:", default=True),
        st.Page(ui.PAGES["kpis"], title="KPIs", icon=":material/edit_note:"),
        st.Page(ui.PAGES["run"], title="Run", icon=":material/play_circle:"),
    ],
    "Analyse": [
        st.Page(ui.PAGES["drilldown"], title="Drill-down", icon=":material/table_view:"),
        st.Page(ui.PAGES["history"], title="History", icon=":material/timeline:"),
    ],
    "Govern": [
        st.Page(ui.PAGES["audit"], title="Audit", icon=":material/policy:"),
        st.Page(ui.PAGES["data_sources"], title="Data sources", icon=":material/database:"),
    ],
}
page = st.navigation(pages)
ui.page_style()

st.logo(ui.LOGO_SVG, icon_image=ui.ICON_SVG, size="large")
ui.identity_sidebar()

try:
    store = ui.get_store()
except Exception as error:  # a wrong KPI_STORE_URL must not show a traceback
    st.error(
        "The KPI store cannot be opened. Check the KPI_STORE_URL setting "
        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})."
    )
    st.stop()

with st.sidebar:
    worker = "on" if ui.worker_running() else "off"
    st.caption(f":material/memory: Background worker {worker}")

# Deep links on the home URL: /?execution=ID and /?kpi=ID open the right page.
if page.url_path == "":
    if ui.query_int("execution") is not None:
        st.switch_page(
            ui.PAGES["drilldown"], query_params={"execution": st.query_params["execution"]}
        )
    elif ui.query_int("kpi") is not None:
        st.switch_page(ui.PAGES["kpis"], query_params={"kpi": st.query_params["kpi"]})

page.run()
