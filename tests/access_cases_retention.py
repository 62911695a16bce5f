"""Access cases of retention: pruning and the storage report are an admin's; why a run's
rows are gone is anyone's who may see the run."""

from __future__ import annotations

from access_world import Case

CASES: dict[str, Case] = {
    "prune": Case(lambda w, a, _: w.store.prune(actor=a)),
    "storage_report": Case(lambda w, a, _: w.store.storage_report(actor=a)),
    "rows_removed_note": Case(lambda w, a, _: w.store.rows_removed_note(w.run, actor=a)),
}

# Public methods with no rule, each with the test that covers it.
UNGUARDED = {
    "prune_chore": "tests/test_retention.py: test_the_worker_chore_prunes",
}
