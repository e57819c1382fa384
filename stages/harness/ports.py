"""Free TCP ports on loopback, for servers that must be told their port before they start.

Our own asyncio servers bind port 0 and read the port back, which has no race at all. A
ZooKeeper server is configured through a file, so it needs a number up front: we let the
kernel pick one (bind port 0), read it, close the socket and hand the number on. Another
process could take the port in the window between our ``close`` and the server's ``bind``;
on a test machine that is rare, and the server then fails loudly at start-up.
"""

from __future__ import annotations

import socket
from contextlib import ExitStack

__all__ = ["free_port", "free_ports"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    Args:
        host: The address to bind, normally loopback.

    Returns:
        A port number chosen by the kernel. It is free when this function returns, but it is
        not reserved: bind it soon.

    Raises:
        OSError: If ``host`` cannot be bound (e.g. not an address of this machine).
    """
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct TCP ports on ``host`` that were free a moment ago.

    Why not call :func:`free_port` ``count`` times: a port closed by one call may come back
    from the next. Holding every socket open until all ports are chosen makes them distinct,
    which a ZooKeeper ensemble needs (three ports per member).

    Args:
        count: How many ports to return; at least 1.
        host: The address to bind, normally loopback.

    Returns:
        ``count`` distinct port numbers, in the order the kernel gave them.

    Raises:
        ValueError: If ``count`` is smaller than 1.
        OSError: If ``host`` cannot be bound.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    # A literal IPv6 address (``::1``) needs an IPv6 socket; everything else is IPv4 here.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports
