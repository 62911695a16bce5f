"""``kpi_ui.md``: user text made inert in Markdown, escaped only where CommonMark allows
(a backslash before a letter or digit is not an escape and would show)."""

from __future__ import annotations

import pytest

from kpi_ui.messages import md


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("40.47%", "40\\.47%"),  # a percentage is not an ordered list, and shows no "\"
        ("1. item", "1\\. item"),
        ("12) item", "12\\) item"),
        ("- item", "\\- item"),
        ("> quote", "\\> quote"),
        ("  3. indented", "  3\\. indented"),
    ],
)
def test_a_line_start_that_would_make_a_list_or_a_quote_stays_text(text: str, escaped: str) -> None:
    assert md(text) == escaped
