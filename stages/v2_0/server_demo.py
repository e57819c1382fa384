"""ServerDemo: the smallest complete v2.0 provider. Run it, then ``client_demo`` in another shell.

::

    python -m stages.v2_0.server_demo            # prints "serving UserApi at 127.0.0.1:PORT"
    python -m stages.v2_0.client_demo PORT

A provider needs three things: the stub package (the interface ``UserApi`` and its data types,
shared with consumers), an implementation of the interface (``UserApiImpl``), and a server that
binds the implementation to the interface's address and serves it.
"""

from __future__ import annotations

import asyncio
import sys

from stages.v2_0.config import ServerConfig
from stages.v2_0.provider import UserApiImpl  # the implementation: plain Python
from stages.v2_0.server import Server
from stages.v2_0.user_stub import UserApi  # the stub package: the interface and its types


async def main(port: int = 0) -> None:
    server = Server(ServerConfig(port=port))
    address = server.bind(UserApi, UserApiImpl())  # namespace/module.UserApi -> the impl
    async with server:
        host, port = server.address
        print(f"serving {address} at {host}:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
    except KeyboardInterrupt:
        pass
