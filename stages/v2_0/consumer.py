"""The consumer side of the demo: call the stub package's interfaces through proxies.

A consumer depends on the stub package only. It knows the provider's address (v2.0 has no
registry yet) and calls ``user_api.get_user(123456)`` as if the object were local.
"""

from __future__ import annotations

from collections.abc import Callable

from stages.v2_0.client import Client
from stages.v2_0.errors import RemoteException
from stages.v2_0.user_stub import Dimensions, InventoryApi, Item, OutOfStock, UserApi, UserNotFound

__all__ = ["run_consumer"]


def run_consumer(client: Client, serializer: str, say: Callable[[str], None] = print) -> None:
    """Call every demo method once through blocking proxies, printing what happens."""
    user_api = client.proxy(UserApi, serializer=serializer)
    inventory = client.proxy(InventoryApi, serializer=serializer)
    say(f"[{serializer}] {user_api!r}")
    say(f"[{serializer}] user_api.get_user(123456) -> {user_api.get_user(123456)!r}")
    say(f"[{serializer}] user_api.find_users('A', limit=1) -> {user_api.find_users('A', limit=1)!r}")
    book = Item("book-1", "The Art of RPC", 39.9, quantity=1, thumbnail=b"\x89PNG",
                tags=["paper"], attributes={"lang": "en"}, dimensions=Dimensions(15, 23, 2))
    receipt = inventory.order([book], coupon="HALF", express=True)
    say(f"[{serializer}] inventory.order([book], coupon='HALF', express=True) -> "
        f"total {receipt.total}, stock left {receipt.stock_left}")
    value = {"int": 1, "float": 2.5, "str": "é", "bytes": b"\x00", "bool": True, "none": None,
             "list": [1, [2, 3]], "nested": {"k": [{"x": 1}]}}
    assert inventory.echo(value) == value
    say(f"[{serializer}] inventory.echo(<every plain type>) came back equal")
    for what, call in (("user_api.get_user(0)", lambda: user_api.get_user(0)),
                       ("inventory.order(99 books)",
                        lambda: inventory.order([Item("book-1", "b", 1.0, quantity=99)])),
                       ("inventory.audit()", inventory.audit)):
        try:
            call()
        except (UserNotFound, OutOfStock) as exc:
            say(f"[{serializer}] {what} raised the declared {type(exc).__name__}: {exc}")
        except RemoteException as exc:
            say(f"[{serializer}] {what} raised an undeclared {exc.remote_type}: RemoteException")
