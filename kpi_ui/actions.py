"""Acting on the store from a page: one helper for "who are you / try / tell / rerun",
one for "are you sure?", and deferred data for download buttons."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextlib import nullcontext
from typing import Any, Literal, TypeVar

import streamlit as st

from kpi_store import KPIStoreError

from .identity import require_actor
from .messages import FlashKind, flash, show_error

T = TypeVar("T")
Done = str | Callable[[Any], str] | None


def act(
    what: str,
    do: Callable[[str], T],
    *,
    done: Done = None,
    kind: FlashKind = "success",
    spinner: str | None = None,
    on_error: Callable[[KPIStoreError], None] = show_error,
    rerun: Literal["app", "fragment"] | None = "app",
) -> T | None:
    """Do ``do(actor)`` for the person in the sidebar, the way every page acts.

    Without a name: a warning ("Enter your name in the sidebar to ``what``") and nothing
    happens. A ``KPIStoreError`` goes to ``on_error`` (a friendly message by default)
    and ``None`` is returned. On success ``done`` (a Markdown message, or a function of
    the result making one: put user text through ``md``) is flashed and the app reruns,
    unless ``rerun`` is None; then the result is returned.
    """
    actor = require_actor(what)
    if not actor:
        return None
    try:
        with st.spinner(spinner) if spinner else nullcontext():
            result = do(actor)
    except KPIStoreError as error:
        on_error(error)
        return None
    message = done(result) if callable(done) else done
    if message:
        flash(message, kind)
    if rerun is not None:
        st.rerun(scope=rerun)
    return result


# -- are you sure? ------------------------------------------------------------------------


def _armed_key(key: str) -> str:
    return f"_confirm_{key}"


def ask_to_confirm(key: str, subject: Hashable) -> None:
    """Open the confirmation ``key`` for ``subject`` (shown by :func:`confirmed`)."""
    st.session_state[_armed_key(key)] = subject


def asking(key: str) -> Any:
    """The subject the confirmation ``key`` is open for, if any."""
    return st.session_state.get(_armed_key(key))


def confirmed(
    key: str, subject: Hashable, question: str, yes: str, icon: str = ":material/warning:"
) -> bool:
    """The "are you sure?" box for ``subject`` if it was asked for, else nothing.

    Shows ``question`` (Markdown: put user text through ``md``) with the buttons
    ``yes`` (key ``{key}_yes``) and Cancel (``{key}_no``). True once, when ``yes`` is
    pressed; Cancel closes the box.
    """
    if asking(key) != subject:
        return False
    st.warning(question, icon=icon)
    yes_column, no_column, _ = st.columns([1, 1, 5])
    pressed = yes_column.button(yes, type="primary", key=f"{key}_yes")
    if no_column.button("Cancel", key=f"{key}_no"):
        st.session_state.pop(_armed_key(key), None)
        st.rerun()
    if pressed:
        st.session_state.pop(_armed_key(key), None)
    return pressed


# -- downloads ------------------------------------------------------------------------------


def deferred(function: Callable[..., bytes], *args: Any, **kwargs: Any) -> Callable[[], bytes]:
    """A zero-argument callable for ``st.download_button(data=...)``: built on click only."""

    def build() -> bytes:
        return function(*args, **kwargs)

    return build
