#!/usr/bin/env bash
# `make test`: run the test suite, with a throw-away PostgreSQL server when one can be had.
#
#   PY=.venv/bin/python scripts/run-tests.sh [PYTEST_ARGS...]
#
# KPI_TEST_POSTGRES_URL set: used as is. Unset, and PostgreSQL's server binaries installed
# (/usr/lib/postgresql/*/bin): starts a cluster with scripts/postgres-test-server.sh, runs
# the suite against it and stops it afterwards, if this run started it (a server already
# answering on the port is reused and left running). No binaries: only the SQLite half
# runs, and the test summary says once why the PostgreSQL tests were skipped.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PY:-.venv/bin/python}"

log() { echo "test: $*" >&2; }

# Same state-file naming as scripts/postgres-test-server.sh.
PG_PORT="${KPI_PG_PORT:-55432}"
if [ "$PG_PORT" = "55432" ]; then
    PG_STATE_FILE=/tmp/kpi-pg-test.dir
else
    PG_STATE_FILE="/tmp/kpi-pg-test-${PG_PORT}.dir"
fi

started=0
stop_ours() {
    if [ "$started" -eq 1 ]; then
        bash scripts/postgres-test-server.sh stop || true
    fi
}

have_binaries() {
    local initdb
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$initdb" ] && return 0
    done
    return 1
}

if [ -z "${KPI_TEST_POSTGRES_URL:-}" ] && have_binaries; then
    before="$(cat "$PG_STATE_FILE" 2>/dev/null || true)"
    trap stop_ours EXIT
    if url="$(bash scripts/postgres-test-server.sh)"; then
        # Ours to stop if the script recorded a new cluster (not one recorded before).
        after="$(cat "$PG_STATE_FILE" 2>/dev/null || true)"
        if [ -n "$after" ] && [ "$after" != "$before" ]; then
            started=1
        fi
        export KPI_TEST_POSTGRES_URL="$url"
        log "PostgreSQL tests use $url$([ "$started" -eq 1 ] && echo " (started for this run)")"
    else
        log "could not start a PostgreSQL test server (see above); its tests will be skipped"
    fi
fi

# Two test processes (pytest-xdist) on this 2-core machine. Tests are shared out file by
# file: a file's tests run in order in one process, so module-scoped fixtures (a browser
# journey's server and tab) live once. KPI_TEST_WORKERS=0 runs everything in one process.
workers="${KPI_TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != "0" ]; then
    parallel=(-n "$workers" --dist loadfile)
fi

# Not exec: the trap above stops the server once pytest is done.
"$PY" -m pytest "${parallel[@]}" "$@"
