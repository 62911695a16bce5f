#!/usr/bin/env bash
# Create (if missing) the virtualenv VENV and install a requirements file into it.
#
#   scripts/venv.sh VENV REQUIREMENTS_FILE
#
# Uses uv (https://github.com/astral-sh/uv) when it can be had, which installs the
# dependencies in a few seconds instead of a minute: the `uv` on PATH (or $UV), else uv
# bootstrapped from PyPI into VENV/.uv with the system pip, else into the virtualenv with
# its own pip. When none of that works, or with KPI_NO_UV=1, it falls back to plain pip.
# PYTHON3 names the interpreter the virtualenv is made from (default: python3).
set -euo pipefail

VENV="${1:?usage: $0 VENV REQUIREMENTS_FILE}"
REQUIREMENTS="${2:?usage: $0 VENV REQUIREMENTS_FILE}"
PYTHON3="${PYTHON3:-python3}"
PY="$VENV/bin/python"

log() { echo "venv: $*" >&2; }

find_uv() {
    [ "${KPI_NO_UV:-0}" = 1 ] && return 1
    if [ -n "${UV:-}" ] && [ -x "$UV" ]; then echo "$UV"; return 0; fi
    if [ -x "$VENV/.uv/bin/uv" ]; then echo "$VENV/.uv/bin/uv"; return 0; fi
    if [ -x "$VENV/bin/uv" ]; then echo "$VENV/bin/uv"; return 0; fi
    command -v uv 2>/dev/null && return 0
    return 1
}

pip_quiet() { "$@" --quiet --disable-pip-version-check; }

uv_bin=""
if [ "${KPI_NO_UV:-0}" != 1 ]; then
    uv_bin="$(find_uv || true)"
fi

if [ ! -x "$PY" ]; then
    if [ -n "$uv_bin" ] || { [ "${KPI_NO_UV:-0}" != 1 ] && "$PYTHON3" -m pip --version >/dev/null 2>&1; }; then
        # uv installs the packages, so the virtualenv needs no pip of its own (saves seconds).
        "$PYTHON3" -m venv --without-pip "$VENV"
    else
        "$PYTHON3" -m venv "$VENV"
    fi
fi

if [ -z "$uv_bin" ] && [ "${KPI_NO_UV:-0}" != 1 ]; then
    # Bootstrap uv from PyPI: with the system pip into VENV/.uv, else with the venv's pip.
    if "$PYTHON3" -m pip --version >/dev/null 2>&1 \
        && pip_quiet "$PYTHON3" -m pip install --target "$VENV/.uv" uv >/dev/null 2>&1; then
        uv_bin="$VENV/.uv/bin/uv"
    elif "$PY" -m pip --version >/dev/null 2>&1 \
        && pip_quiet "$PY" -m pip install uv >/dev/null 2>&1; then
        uv_bin="$VENV/bin/uv"
    fi
    [ -n "$uv_bin" ] && [ -x "$uv_bin" ] || uv_bin=""
fi

if [ -n "$uv_bin" ]; then
    log "installing $REQUIREMENTS with $("$uv_bin" --version)"
    if "$uv_bin" pip install --quiet --python "$PY" -r "$REQUIREMENTS"; then
        exit 0
    fi
    log "uv failed; falling back to pip"
fi

log "installing $REQUIREMENTS with pip"
if ! "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m ensurepip --upgrade >/dev/null
fi
pip_quiet "$PY" -m pip install --upgrade pip
pip_quiet "$PY" -m pip install -r "$REQUIREMENTS"
