"""Access cases for a number's story: unusual values and "What changed?"."""

from __future__ import annotations

from access_world import Case

CASES: dict[str, Case] = {
    "unusual": Case(lambda w, a, _: w.store.unusual(w.run, actor=a)),
    "unusual_flags": Case(lambda w, a, _: w.store.unusual_flags([w.run], actor=a)),
    "what_changed": Case(
        lambda w, a, _: w.store.what_changed(w.run, w.run, column="revenue", actor=a)
    ),
}
