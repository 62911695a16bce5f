"""KPI Desk: ``streamlit run dashboard.py``.

Streamlit runs this file for every page view (as ``__main__``): page config, who is
looking (sign-in, or a typed name in the demo mode), navigation over the files in
``pages/`` they may open, the sidebar identity, one ``KPIStore`` (plus the embedded
background worker) per server process, and deep links: ``/?kpi=ID`` opens that KPI,
``/?execution=ID`` opens that run.

Imported as a module (``streamlit run`` finds ``app`` below and serves it with uvicorn),
it is the ASGI app: Streamlit plus ``/export/<token>.csv``, which streams every row of a
run as CSV without holding the file in memory.
"""

from __future__ import annotations

import streamlit as st

import kpi_ui as ui


def render() -> None:
    st.set_page_config(
        page_title="KPI Desk",
        page_icon=":material/monitoring:",
        layout="wide",
        initial_sidebar_state="auto",  # collapsed on a phone, open on wider screens
    )
    ui.page_style()
    st.logo(ui.LOGO_SVG, icon_image=ui.ICON_SVG, size="large")
    try:
        store = ui.app_store()
    except Exception as error:  # a wrong KPI_STORE_URL must not show a traceback
        reason = str(error).splitlines()[0] if str(error) else ""
        st.error(
            "The KPI store cannot be opened. Check the KPI_STORE_URL setting "
            f"({type(error).__name__}: {ui.md(reason)})."
        )
        st.stop()
    viewer = ui.identify(store)
    if viewer is None:  # sign-in is on and this visitor is not (or may not be) signed in
        ui.gate_navigation(ui.gate_page).run()
        return
    page = ui.navigation(viewer.role)
    ui.identity_sidebar(viewer)
    with st.sidebar:
        st.caption(f":material/memory: Background worker {'on' if ui.worker_running() else 'off'}")
    # Deep links on the home URL: /?execution=ID and /?kpi=ID open the right page.
    if page.url_path == "":
        if (execution := ui.query_int("execution")) is not None:
            ui.switch_to(ui.Page.DRILLDOWN, execution=execution)
        elif (kpi := ui.query_int("kpi")) is not None:
            ui.switch_to(ui.Page.KPIS, kpi=kpi)
    page.run()


if __name__ == "__main__":
    render()
else:
    app = st.App(__file__, routes=ui.download_routes(ui.process_store))
