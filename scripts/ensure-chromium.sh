#!/usr/bin/env bash
# Make sure a Chromium is there for the browser test of `make lab` (`make lab-check`): Debian's
# `chromium` package, /usr/bin/chromium, which Playwright drives headless. Nothing to do when it
# is already installed. Playwright's own browser download (`playwright install`) is never used.
# --no-install-recommends: Playwright runs Chromium headless with --no-sandbox, so nothing a
# Chromium package may recommend (chromium-sandbox, in some versions) is used. Checked with
# Debian 12's chromium 156: about 520 MB of disk, installed in about 15 s.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi

echo "Chromium not found: installing Debian's 'chromium' package with apt-get."
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "error: Chromium is missing and this user cannot run apt-get (not root, no sudo)." >&2
    echo "       Install it with 'apt-get install chromium' as root; only 'make lab-check' needs it." >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no apt-get on this machine; install Chromium yourself so that $CHROMIUM runs." >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
test -x "$CHROMIUM" || { echo "error: apt-get ran but $CHROMIUM is missing" >&2; exit 1; }
echo "Chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
