"""App wiring: one store and one embedded worker per server process, and the navigation
every page runs inside (who is acting lives in ``identity``)."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import runpy
from pathlib import Path
from typing import Any

import streamlit as st

from kpi_store import KPIStore, Role
from kpi_store.config import Settings

from .links import Page

log = logging.getLogger("kpi_desk")

APP_SCRIPT = Path(__file__).resolve().parents[1] / "dashboard.py"
NAVIGATION = {
    "Metrics": [
        (Page.OVERVIEW, "Overview", ":material/dashboard:"),
        (Page.KPIS, "KPIs", ":material/edit_note:"),
        (Page.RUN, "Run", ":material/play_circle:"),
    ],
    "Analyse": [
        (Page.DRILLDOWN, "Drill-down", ":material/table_view:"),
        (Page.HISTORY, "History", ":material/timeline:"),
    ],
    "Alerts": [
        (Page.ALERTS, "Schedules & alerts", ":material/notifications_active:"),
        (Page.INBOX, "Inbox", ":material/inbox:"),
    ],
    "Govern": [
        (Page.AUDIT, "Audit", ":material/policy:"),
        (Page.DATA_SOURCES, "Data sources", ":material/database:"),
        (Page.PEOPLE, "People", ":material/group:"),
        (Page.STORAGE, "Storage", ":material/storage:"),
    ],
}
ADMIN_PAGES = frozenset({Page.PEOPLE, Page.STORAGE})


# -- store and worker -----------------------------------------------------------------


def store_url() -> str:
    return Settings.from_env().url


_OPEN_STORES: dict[str, KPIStore] = {}  # the stores _store_for made, for non-page threads


@st.cache_resource(show_spinner=False)
def _store_for(url: str) -> KPIStore:
    store = KPIStore(url)
    _OPEN_STORES[url] = store
    # Everything loaded so far (Streamlit, pandas, the store) lives as long as the
    # process: keep it out of the collector's full passes, which otherwise walk it all.
    gc.freeze()
    return store


@st.cache_resource(show_spinner=False)
def _worker_for(url: str) -> Any:
    """One background worker per server process and store; ``None`` if unavailable."""
    try:
        from kpi_store import Worker
    except ImportError:
        log.warning("kpi_store.Worker is not available: background runs stay queued")
        return None
    worker = Worker(_store_for(url), concurrency=2)
    worker.start()
    atexit.register(worker.stop)
    return worker


def embedded_worker_enabled() -> bool:
    return os.environ.get("KPI_EMBEDDED_WORKER", "1").strip().lower() not in ("0", "false", "no")


def process_store() -> KPIStore:
    """The store of this server process (cached per URL), also from a thread that is not
    a page run (the download route), where ``st.cache_resource`` is not to be called."""
    url = store_url()
    store = _OPEN_STORES.get(url)
    return store if store is not None else _store_for(url)


def get_store() -> KPIStore:
    """The store of this server process, with its embedded worker.

    Every page calls this first, so it also makes sure the page runs inside the app.
    """
    ensure_app_navigation()
    return app_store()


def app_store() -> KPIStore:
    """The store of this server process, its embedded worker started (``dashboard.py``)."""
    store = process_store()
    if embedded_worker_enabled():
        _worker_for(store_url())
    return store


def worker_running() -> bool:
    if not embedded_worker_enabled():
        return False
    return _worker_for(store_url()) is not None


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


def navigation(role: Role = Role.ADMIN) -> Any:
    """``st.navigation`` over the pages ``role`` may open, group by group as the sidebar
    shows them (the People and Storage pages are for admins).

    One flat list, its groups set apart by a gap (``look.nav_gaps_css``), not Streamlit's
    sections: those put each section's header and links in a ``<div>`` straight inside
    the ``<ul>``, which screen readers cannot read as a list (axe-core's rules ``list``
    and ``listitem``), and the app has no say in that markup."""
    return st.navigation(
        [
            st.Page(page.path, title=title, icon=icon, default=page == Page.OVERVIEW)
            for entries in NAVIGATION.values()
            for page, title, icon in entries
            if page not in ADMIN_PAGES or role.includes(Role.ADMIN)
        ]
    )


def gate_navigation(gate: Any) -> Any:
    """The navigation of a visitor who must sign in first: the gate at every page's
    address, so a shared link (/kpis) or a click in a page left open leads to it, not to
    a "Page not found" dialog over "Sign in"."""
    pages = [
        st.Page(gate, title="Sign in", url_path=page.value, default=page == Page.OVERVIEW)
        for page in Page
    ]
    return st.navigation(pages, position="hidden")
