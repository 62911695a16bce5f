#!/usr/bin/env bash
# Throw-away PostgreSQL cluster for the test suite.
#
#   scripts/postgres-test-server.sh          start (or reuse) the server; prints its URL
#   scripts/postgres-test-server.sh stop     stop the cluster this script started and delete it
#
# Start prints exactly one line on stdout:
#   postgresql+psycopg://postgres@127.0.0.1:PORT/kpi_test
# Everything else goes to stderr. PORT defaults to 55432 (override with KPI_PG_PORT).
# The cluster's directory is recorded in /tmp/kpi-pg-test.dir (/tmp/kpi-pg-test-PORT.dir for
# other ports); `stop` stops and deletes exactly that cluster.
# Meant to run as root on Debian (installs the `postgresql` package when missing); as any
# other user it runs the server as that user and cannot install anything.
set -euo pipefail

PORT="${KPI_PG_PORT:-55432}"
DB="kpi_test"
PG_USER="postgres"
# Records the data directory of the cluster we started (one file per port, so clusters on
# different ports never step on each other).
if [ "$PORT" = "55432" ]; then
    STATE_FILE="/tmp/kpi-pg-test.dir"
else
    STATE_FILE="/tmp/kpi-pg-test-${PORT}.dir"
fi
URL="postgresql+psycopg://${PG_USER}@127.0.0.1:${PORT}/${DB}"

# Keep stdout for the URL only.
exec 3>&1 1>&2

log() { echo "postgres-test-server: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Run a command as the server's OS user (postgres when we are root, else ourselves).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        local cmd
        cmd="$(printf '%q ' "$@")"
        su -s /bin/sh postgres -c "$cmd"
    else
        "$@"
    fi
}

find_bindir() {
    # Highest installed major version that has initdb.
    local d best=""
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
        [ -x "$d/initdb" ] && best="$d"
    done
    echo "$best"
}

ensure_installed() {
    PG_BIN="$(find_bindir)"
    if [ -z "$PG_BIN" ]; then
        [ "$(id -u)" -eq 0 ] || die "PostgreSQL is not installed and we are not root (run: apt-get install postgresql)"
        command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is unavailable"
        log "installing PostgreSQL with apt-get ..."
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >&2
        PG_BIN="$(find_bindir)"
        [ -n "$PG_BIN" ] || die "PostgreSQL installation did not provide /usr/lib/postgresql/*/bin/initdb"
    fi
    id postgres >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ] || die "OS user 'postgres' does not exist"
}

# 0 = accepting connections, 1 = starting up / rejecting, 2 = no response.
server_state() {
    local rc=0
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 3 || rc=$?
    echo "$rc"
}

ensure_database() {
    local exists
    exists="$("$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d postgres -XtAq \
        -c "SELECT 1 FROM pg_database WHERE datname = '${DB}'")" \
        || die "cannot connect to the server on 127.0.0.1:${PORT} as ${PG_USER}"
    if [ "$exists" != "1" ]; then
        log "creating database ${DB}"
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$PG_USER" "$DB"
    fi
}

stop_server() {
    if [ ! -s "$STATE_FILE" ]; then
        log "no cluster recorded in $STATE_FILE; nothing to stop"
        return 0
    fi
    local dir
    dir="$(cat "$STATE_FILE")"
    case "$dir" in
        /tmp/kpi-pg.*) ;;
        *) die "unexpected directory in $STATE_FILE: '$dir'" ;;
    esac
    PG_BIN="$(find_bindir)"
    if [ -n "$PG_BIN" ] && [ -f "$dir/data/postmaster.pid" ]; then
        log "stopping cluster in $dir"
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >&2 || log "pg_ctl stop failed (already stopped?)"
    fi
    rm -rf -- "$dir"
    rm -f -- "$STATE_FILE"
    log "stopped"
}

start_server() {
    ensure_installed

    case "$(server_state)" in
        0)
            log "a server already answers on 127.0.0.1:${PORT}; reusing it"
            ensure_database
            echo "$URL" >&3
            return 0
            ;;
        1)
            log "a server on 127.0.0.1:${PORT} is starting up; waiting"
            local i
            for i in $(seq 1 30); do
                [ "$(server_state)" = 0 ] && break
                sleep 1
            done
            [ "$(server_state)" = 0 ] || die "server on 127.0.0.1:${PORT} never became ready"
            ensure_database
            echo "$URL" >&3
            return 0
            ;;
    esac

    # Nothing is listening: forget any stale cluster we recorded earlier.
    if [ -s "$STATE_FILE" ]; then
        log "removing stale cluster recorded in $STATE_FILE"
        stop_server
    fi

    local started dir
    started="$(date +%s.%N)"
    dir="$(mktemp -d /tmp/kpi-pg.XXXXXX)"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
    chmod 700 "$dir"
    echo "$dir" > "$STATE_FILE"

    log "initialising cluster in $dir ($PG_BIN)"
    if ! as_pg "$PG_BIN/initdb" -D "$dir/data" -A trust -U "$PG_USER" -E UTF8 --locale=C.UTF-8 \
            >"$dir/initdb.log" 2>&1; then
        # Some minimal systems lack C.UTF-8; plain C always exists.
        rm -rf -- "${dir:?}/data"
        as_pg "$PG_BIN/initdb" -D "$dir/data" -A trust -U "$PG_USER" -E UTF8 --locale=C \
            >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    fi

    log "starting server on 127.0.0.1:${PORT}"
    local opts="-p ${PORT} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    opts+=" -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    # 3>&- : the daemon must not inherit our stdout pipe, or $(this script) never returns.
    if ! as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -o "$opts" -l "$dir/log" -w -t 60 start >&2 3>&-; then
        tail -n 30 "$dir/log" >&2 || true
        die "pg_ctl start failed (is port ${PORT} in use? set KPI_PG_PORT)"
    fi

    ensure_database
    log "ready in $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s"
    echo "$URL" >&3
}

case "${1:-start}" in
    start) start_server ;;
    stop) stop_server ;;
    *) die "usage: $0 [start|stop]" ;;
esac
