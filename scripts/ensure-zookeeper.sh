#!/usr/bin/env bash
# Make sure a ZooKeeper server can be started locally (Debian's `zookeeper` package).
# Nothing to do when the user points at their own ZooKeeper (RPC_ZK=host:port) or when
# the package is already installed.
set -euo pipefail

if [ -n "${RPC_ZK:-}" ]; then
    echo "ZooKeeper: using RPC_ZK=${RPC_ZK}; nothing installed."
    exit 0
fi
if [ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null 2>&1; then
    exit 0
fi

echo "ZooKeeper not found: installing Debian's 'zookeeper' package with apt-get."
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "error: ZooKeeper is missing and this user cannot run apt-get (not root, no sudo)." >&2
    echo "       Install it with 'apt-get install zookeeper' as root, or point at a running" >&2
    echo "       ZooKeeper with RPC_ZK=host:port." >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no apt-get on this machine; install ZooKeeper 3.8 yourself, or set RPC_ZK=host:port." >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends zookeeper >/dev/null
test -f /usr/share/java/zookeeper.jar || { echo "error: apt-get ran but /usr/share/java/zookeeper.jar is missing" >&2; exit 1; }
echo "ZooKeeper installed."
