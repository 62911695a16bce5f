#!/usr/bin/env bash
# Make sure a system Chromium exists at /usr/bin/chromium (used by the browser tests
# through Playwright). Installs the Debian `chromium` package when it is missing.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "ensure-chromium: $CHROMIUM missing; installing the chromium package ..." >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq chromium >&2
    else
        echo "ensure-chromium: $CHROMIUM missing and cannot install it (need root and apt-get)." >&2
    fi
fi

if [ ! -x "$CHROMIUM" ]; then
    echo "ensure-chromium: ERROR: $CHROMIUM is still missing; install Debian's 'chromium' package." >&2
    exit 1
fi

echo "ensure-chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM present")" >&2
