"""ClientDemo: the smallest complete v2.0 consumer, calling a running ``server_demo``.

::

    python -m stages.v2_0.client_demo PORT

A consumer needs the stub package only, and the provider's address (v2.0 has no registry yet):
the proxy is made at run time from the interface, and its method calls go over the network.
"""

from __future__ import annotations

import sys

from stages.v2_0.client import Client
from stages.v2_0.user_stub import UserApi, UserNotFound


def main(port: int, host: str = "127.0.0.1") -> None:
    with Client(host, port) as client:
        user_api = client.proxy(UserApi)  # a UserApi whose methods are remote calls
        print(user_api.get_user(123456))
        try:
            user_api.get_user(0)
        except UserNotFound as exc:  # the provider's exception, raised here as itself
            print(f"UserNotFound: {exc}")


if __name__ == "__main__":
    main(int(sys.argv[1]))
