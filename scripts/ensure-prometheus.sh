#!/usr/bin/env bash
# Make sure a Prometheus server can be started locally (Debian's `prometheus` package, 2.42 on
# Debian 12). The harness (stages/harness/prometheus.py) runs /usr/bin/prometheus itself, on a
# free loopback port with its own config; the system service the package ships is not needed.
set -euo pipefail

if [ -x /usr/bin/prometheus ]; then
    exit 0
fi

echo "Prometheus not found: installing Debian's 'prometheus' package with apt-get."
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "error: Prometheus is missing and this user cannot run apt-get (not root, no sudo)." >&2
    echo "       Install it with 'apt-get install prometheus' as root." >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no apt-get on this machine; install Prometheus 2.x yourself as /usr/bin/prometheus." >&2
    exit 1
fi

# The package's post-install starts its service through invoke-rc.d. Without systemd (a
# container) that runs /etc/init.d/prometheus, which either fails (and with it the install) or
# leaves a stray server on port 9090. A policy-rc.d answering 101 ("action forbidden") makes
# invoke-rc.d and deb-systemd-invoke skip the start. Docker images often have one already;
# we never touch an existing one, we only add ours for the duration of the install.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    $SUDO sh -c "printf '#!/bin/sh\n# Added by rpc-walkthrough ensure-prometheus.sh during apt-get install.\nexit 101\n' > $POLICY && chmod 755 $POLICY"
    trap '$SUDO rm -f "$POLICY"' EXIT
fi

# Through `env`: sudo's env_reset would drop an exported DEBIAN_FRONTEND.
APT_GET="$SUDO env DEBIAN_FRONTEND=noninteractive apt-get"
$APT_GET update -qq
$APT_GET install -y -qq --no-install-recommends prometheus >/dev/null
test -x /usr/bin/prometheus || { echo "error: apt-get ran but /usr/bin/prometheus is missing" >&2; exit 1; }
echo "Prometheus installed: $(/usr/bin/prometheus --version 2>&1 | head -n 1)"
