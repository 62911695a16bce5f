"""App wiring: one store and one embedded worker per server process, the navigation
every page runs inside, and the identity box (who is acting)."""

from __future__ import annotations

import atexit
import logging
import os
import runpy
from pathlib import Path
from typing import Any

import streamlit as st

from kpi_store import KPIStore
from kpi_store.config import Settings

from .links import Page

log = logging.getLogger("kpi_desk")

APP_SCRIPT = Path(__file__).resolve().parents[1] / "dashboard.py"
ACTOR_KEY = "actor"
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
    "Govern": [
        (Page.AUDIT, "Audit", ":material/policy:"),
        (Page.DATA_SOURCES, "Data sources", ":material/database:"),
    ],
}


# -- store and worker -----------------------------------------------------------------


def store_url() -> str:
    return Settings.from_env().url


_OPEN_STORES: dict[str, KPIStore] = {}  # the stores _store_for made, for non-page threads


@st.cache_resource(show_spinner=False)
def _store_for(url: str) -> KPIStore:
    store = KPIStore(url)
    _OPEN_STORES[url] = store
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


def navigation() -> Any:
    """``st.navigation`` over every page, grouped as the sidebar shows them."""
    return st.navigation(
        {
            group: [
                st.Page(page.path, title=title, icon=icon, default=page == Page.OVERVIEW)
                for page, title, icon in entries
            ]
            for group, entries in NAVIGATION.items()
        }
    )


# -- identity ---------------------------------------------------------------------------


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
