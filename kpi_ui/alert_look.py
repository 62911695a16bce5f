"""How alerts look: the badge of a rule's state (and of a KPI's worst state, on its card),
the badge of each kind of notification, and times shown in a schedule's own zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import streamlit as st

from kpi_store.alert_records import KPIAlerts
from kpi_store.alert_states import AlertState

# state -> (word, badge colour, material icon): firing red, pending and recovering amber,
# no data and error grey, ok green.
ALERT_STYLE: dict[AlertState, tuple[str, str, str]] = {
    AlertState.FIRING: ("Firing", "red", ":material/notifications_active:"),
    AlertState.PENDING: ("Pending", "orange", ":material/hourglass_top:"),
    AlertState.RECOVERING: ("Recovering", "orange", ":material/trending_up:"),
    AlertState.NO_DATA: ("No data", "gray", ":material/block:"),
    AlertState.ERROR: ("Error", "gray", ":material/error:"),
    AlertState.OK: ("OK", "green", ":material/check_circle:"),
}
# notification kind -> (word, badge colour, material icon), for the inbox
NOTICE_STYLE: dict[str, tuple[str, str, str]] = {
    "firing": ("Alert", "red", ":material/notifications_active:"),
    "renotify": ("Still alerting", "red", ":material/notifications_active:"),
    "recovered": ("Recovered", "green", ":material/check_circle:"),
    "no_data": ("No data", "gray", ":material/block:"),
    "error": ("Run failed", "gray", ":material/error:"),
    "test": ("Test", "blue", ":material/science:"),
}
FOREVER = dt.datetime(9999, 12, 31)  # "muted until unmuted"


def state_word(state: str) -> str:
    """A rule state as people read it: ``Firing``, ``No data``, ``OK``."""
    try:
        return ALERT_STYLE[AlertState(state)][0]
    except ValueError:
        return str(state)


def alert_badge(state: str, label: str | None = None, help_text: str | None = None) -> None:
    """A badge in the state's colour: ``label`` or the state's word."""
    word, colour, icon = ALERT_STYLE.get(AlertState(state), (str(state), "gray", None))
    st.badge(label or word, color=colour, icon=icon, help=help_text)  # type: ignore[arg-type]


def card_alert_badge(summary: KPIAlerts) -> None:
    """A KPI card's alert line: its rules' worst state, how many fire and are muted."""
    facts = [f"{summary.rules} alert rule{'s' if summary.rules != 1 else ''}"]
    if summary.firing:
        facts.append(f"{summary.firing} firing")
    if summary.muted:
        facts.append(f"{summary.muted} muted")
    alert_badge(summary.state, f"Alert: {state_word(summary.state).lower()}", " · ".join(facts))


def notice_badge(kind: str) -> str:
    """The badge of a notification's kind, as Markdown to put in a line of text."""
    word, colour, icon = NOTICE_STYLE.get(kind, (str(kind).title(), "gray", ""))
    return f":{colour}-badge[{icon} {word}]"


def muted_text(until: dt.datetime | None, now: dt.datetime) -> str | None:
    """``muted until 2026-03-01 14:05 UTC`` / ``muted until unmuted``; None when not muted."""
    if until is None or until <= now:
        return None
    if until >= FOREVER - dt.timedelta(days=1):
        return "muted until unmuted"
    return f"muted until {until:%Y-%m-%d %H:%M} UTC"


def local_time(moment: dt.datetime | None, missing: str = "—") -> str:
    """A zone-aware time as its zone reads it: ``2026-03-29 03:30:00 CEST``."""
    if moment is None:
        return missing
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def in_zone(moment: dt.datetime | None, zone: str) -> dt.datetime | None:
    """A stored (naive UTC) time in ``zone`` (zone-aware); None stays None."""
    if moment is None:
        return None
    try:
        target = ZoneInfo(zone)
    except (ValueError, KeyError):
        target = ZoneInfo("UTC")
    return moment.replace(tzinfo=dt.UTC).astimezone(target)
