"""How KPI Desk looks: the logo, page CSS, and the style of each status word."""

from __future__ import annotations

import streamlit as st

from kpi_store import RAG, RunStatus

STATUS_STYLE: dict[RunStatus, tuple[str, str, str]] = {
    # status -> (label, badge colour, material icon)
    RunStatus.PENDING: ("Queued", "violet", ":material/schedule:"),
    RunStatus.RUNNING: ("Running", "blue", ":material/autorenew:"),
    RunStatus.SUCCESS: ("Success", "green", ":material/check_circle:"),
    RunStatus.FAILED: ("Failed", "red", ":material/error:"),
    RunStatus.TIMEOUT: ("Timed out", "orange", ":material/timer_off:"),
    RunStatus.CANCELLED: ("Cancelled", "gray", ":material/block:"),
}
STATUS_COLOURS: dict[RunStatus, str] = {
    RunStatus.SUCCESS: "#16a34a",
    RunStatus.FAILED: "#dc2626",
    RunStatus.TIMEOUT: "#ea580c",
    RunStatus.CANCELLED: "#6b7280",
    RunStatus.RUNNING: "#2563eb",
    RunStatus.PENDING: "#7c3aed",
}
RAG_STYLE: dict[RAG, tuple[str, str, str]] = {
    RAG.GREEN: ("On target", "green", ":material/check_circle:"),
    RAG.AMBER: ("Near target", "orange", ":material/warning:"),
    RAG.RED: ("Off target", "red", ":material/error:"),
    RAG.NO_DATA: ("No data", "gray", ":material/block:"),
}

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

PRIMARY = "#2563eb"
# Captions, in a grey that reads at 6.0:1 on white and 5.5:1 on the sidebar (WCAG AA asks
# 4.5:1). Streamlit draws them in the text colour at 60% opacity, 4.0:1 on white.
CAPTION_COLOUR = "#5b6472"

PAGE_CSS = """
<style>
[data-testid="stMainBlockContainer"] { padding-top: 2.2rem; }
textarea[aria-label="SQL"] { font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
                             font-size: 0.86rem; }
[data-testid="stMetricValue"] { font-size: 1.9rem; }
a.kpi-download { display: inline-flex; align-items: center; gap: 0.4rem;
                 padding: 0.25rem 0.75rem; min-height: 2.5rem; border-radius: 0.5rem;
                 background: #2563eb; color: #fff !important; text-decoration: none;
                 font-weight: 400; }
a.kpi-download:hover { background: #1d4ed8; }
div[data-testid="stCaptionContainer"] { opacity: 1; color: CAPTION_COLOUR; }
a[data-testid="stSidebarNavLink"]:focus-visible,
a[data-testid="stPageLink-NavLink"]:focus-visible { outline: 2px solid PRIMARY;
                                                     outline-offset: -2px; }
a.kpi-download:focus-visible { outline: 2px solid #1e3a8a; outline-offset: 2px; }
NAV_GAPS</style>
"""


def nav_gaps_css() -> str:
    """A gap in the sidebar above the link of each page that starts a group of the
    navigation (the navigation is one flat list: see ``app.navigation``)."""
    from .app import NAVIGATION  # (app.py does not import this module)

    items = '[data-testid="stSidebarNavItems"] > li'
    starts = [entries[0][0].value for entries in list(NAVIGATION.values())[1:]]
    return "".join(
        f'{items}:has(a[href$="/{path}"]) {{ margin-top: 0.9rem; }}\n' for path in starts
    )


def page_style() -> None:
    css = (
        PAGE_CSS.replace("CAPTION_COLOUR", CAPTION_COLOUR)
        .replace("PRIMARY", PRIMARY)
        .replace("NAV_GAPS", nav_gaps_css())
    )
    st.markdown(css, unsafe_allow_html=True)


def status_label(status: str) -> str:
    """The word shown for a run status (``Timed out`` for ``timeout``)."""
    style = STATUS_STYLE.get(RunStatus(status)) if status in set(RunStatus) else None
    return style[0] if style else str(status).title()


def rag_label(rag: str | None) -> str:
    return RAG_STYLE[RAG(rag)][0] if rag else "No target"
