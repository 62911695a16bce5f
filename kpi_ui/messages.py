"""Messages: flashes that survive a rerun, store errors as friendly text, field errors,
and :func:`md`, which makes user text safe to put inside a Markdown message."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import streamlit as st

from kpi_store import KPIStoreError, VersionConflictError

FlashKind = Literal["success", "info", "warning", "error"]

# Characters that start Markdown, LaTeX, HTML or Streamlit directives (":red[", ":smile:").
_ALWAYS = re.compile(r"([\\`*\[\]<>$~|#{}&!])")
_LINE_START = re.compile(r"^(\s*)([-+=>]|\d+[.)])", re.MULTILINE)
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# Found in the parsed text, after escapes are resolved, so a backslash cannot stop them:
# GFM's literal autolinks (``https://…``, ``www.…``, ``name@host.tld``). A word joiner
# (U+2060, invisible) before them breaks the match and leaves the text as typed.
_AUTOLINK = re.compile(r"(?i)(?=https?:|www\.)|(?<=[-.+\w])(?=@)")
WORD_JOINER = "\u2060"


def md(text: object) -> str:
    """User text made inert inside Markdown (and Streamlit labels): it shows as typed.

    Backslash-escapes what could format, link, embed an image, colour or run LaTeX;
    writes ``:`` as ``&#58;`` (Streamlit turns ``:material/x:`` into an icon before
    Markdown is parsed, escaped or not); puts an invisible word joiner before what GFM
    would turn into a link by itself (``https://``, ``www.``, ``a@b.c``). Letters,
    digits, spaces, quotes and underscores inside words (``budget_2025``) stay as they
    are. HTML tags show as text (``<`` is escaped).
    """
    raw = _AUTOLINK.sub(WORD_JOINER, str(text))
    escaped = _ALWAYS.sub(r"\\\1", raw)
    escaped = _UNDERSCORE.sub(r"\\_", escaped)
    escaped = _LINE_START.sub(_inert_line_start, escaped)
    return escaped.replace(":", "&#58;")


def _inert_line_start(match: re.Match[str]) -> str:
    """A line start that would begin a list, quote or heading, kept as text: the marker's
    punctuation is escaped (``1\\.``, not ``\\1.``: only punctuation can be escaped, and a
    backslash before a digit would show)."""
    indent, marker = match.group(1), match.group(2)
    return f"{indent}{marker[:-1]}\\{marker[-1]}"


def md_delta(text: object) -> str:
    """:func:`md` for an ``st.metric`` delta, keeping a leading ``-`` (its direction)."""
    raw = str(text)
    return f"-{md(raw[1:])}" if raw.startswith("-") else md(raw)


def plain(text: object) -> str:
    """Text as the person sees it in a Markdown rendering of :func:`md` (for tests)."""
    return str(text).replace(WORD_JOINER, "")


def flash(message: str, kind: FlashKind = "success") -> None:
    """A message shown once at the top of the next run (survives ``st.rerun``).

    ``message`` is Markdown: pass user text through :func:`md`.
    """
    st.session_state.setdefault("_flash", []).append((kind, message))


def show_flash() -> None:
    for kind, message in st.session_state.pop("_flash", []):
        getattr(st, kind)(message)


def show_error(error: Exception) -> None:
    """A store error as a friendly message: the text written for the user, no traceback."""
    icon = ":material/sync_problem:" if isinstance(error, VersionConflictError) else None
    st.error(md(error), icon=icon or ":material/error:")


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Show any ``KPIStoreError`` raised in the block as a message and carry on."""
    try:
        yield
    except KPIStoreError as error:
        show_error(error)


def field_errors(error: Exception | None) -> dict[str, str]:
    return dict(getattr(error, "field_errors", {}) or {})


def remember_error(slot: str, error: Exception) -> None:
    """Keep a failed attempt's message and field errors for the next run of the form.

    They belong to that attempt: the inputs of the form (the widget values whose keys
    start with ``{slot}_``) are remembered with them, and once any of those inputs
    changes, :func:`remembered_errors` and :func:`show_remembered_error` forget them.
    """
    st.session_state[f"{slot}_errors"] = field_errors(error)
    st.session_state[f"{slot}_message"] = str(error)
    st.session_state[f"{slot}_attempt"] = _inputs(slot)


def remembered_errors(slot: str) -> dict[str, str]:
    """The field errors of the last failed attempt, while its inputs are unchanged."""
    _forget_if_changed(slot)
    errors: dict[str, str] = st.session_state.get(f"{slot}_errors", {})
    return errors


def show_remembered_error(slot: str) -> None:
    _forget_if_changed(slot)
    message = st.session_state.get(f"{slot}_message")
    if message:
        st.error(md(message), icon=":material/error:")


def forget_error(slot: str) -> None:
    for suffix in _OWN_SUFFIXES:
        st.session_state.pop(f"{slot}{suffix}", None)


_OWN_SUFFIXES = ("_errors", "_message", "_attempt")


def _inputs(slot: str) -> dict[str, Any]:
    """The form's inputs: what session state holds under ``{slot}_`` (copied).

    Yes/no values are left out: a button is True only in the run it was pressed, so it
    would make every attempt look changed at once (a toggle is left out with them; its
    value can always be held, so no error is about it).
    """
    inputs: dict[str, Any] = {}
    own = {f"{slot}{suffix}" for suffix in _OWN_SUFFIXES}
    for key in list(st.session_state.keys()):
        if not isinstance(key, str) or not key.startswith(f"{slot}_") or key in own:
            continue
        value = st.session_state[key]
        if isinstance(value, bool):
            continue
        try:
            inputs[key] = copy.deepcopy(value)
        except Exception:  # a value that cannot be copied is compared as it is
            inputs[key] = value
    return inputs


def _forget_if_changed(slot: str) -> None:
    """Forget the remembered attempt once an input it was made with has changed (new
    inputs, such as a parameter row added since, show up as a changed row list)."""
    attempt: dict[str, Any] | None = st.session_state.get(f"{slot}_attempt")
    if attempt is None:
        return
    now = _inputs(slot)
    missing = object()
    if not all(_same(now.get(key, missing), value) for key, value in attempt.items()):
        forget_error(slot)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # a value whose == is not a plain yes or no (an array)
        return a is b


def field_error(errors: dict[str, str], *names: str) -> None:
    """Show the messages for ``names`` (and their sub-fields) under a widget."""
    shown = []
    for key, message in errors.items():
        if any(key == n or key.startswith(f"{n}.") or key.startswith(f"{n}[") for n in names):
            shown.append(message)
    for message in dict.fromkeys(shown):
        st.markdown(f":red[:material/error: {md(message)}]")
