"""The provider side of the demo: implementations of the stub package's interfaces.

A provider depends on the stub package (interfaces and data types), implements the interfaces,
and binds each implementation to its API address on a server.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from stages.v2_0.user_stub import (
    InventoryApi,
    Item,
    OutOfStock,
    Receipt,
    User,
    UserApi,
    UserNotFound,
)

__all__ = ["UserApiImpl", "InventoryApiImpl", "AuditLogUnavailable"]


class UserApiImpl(UserApi):
    """Users kept in memory: ids 1 to 1,000,000 exist, derived from the id."""

    NAMES = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov")
    MAX_ID = 1_000_000

    def get_user(self, user_id: int) -> User:
        if not isinstance(user_id, int) or not 0 < user_id <= self.MAX_ID:
            raise UserNotFound(user_id)
        name = self.NAMES[user_id % len(self.NAMES)]
        return User(user_id, name, f"{name.split()[0].lower()}.{user_id}@example.org")

    def find_users(self, prefix: str, *, limit: int = 10) -> list[User]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        found = [self.get_user(i) for i in range(1, 6) if self.NAMES[i % 5].startswith(prefix)]
        return found[:limit]


class AuditLogUnavailable(RuntimeError):
    """An exception the InventoryApi does not declare: it reaches callers as a RemoteException."""


class InventoryApiImpl(InventoryApi):
    """A tiny shop with a stock of each item."""

    def __init__(self, stock: dict[str, int] | None = None) -> None:
        self._stock = dict(stock if stock is not None else {"book-1": 5, "pen-2": 100})
        self._orders = itertools.count(1)
        self._lock = threading.Lock()

    def order(self, items: list[Item], *, coupon: str | None = None,
              express: bool = False) -> Receipt:
        with self._lock:
            for item in items:
                left = self._stock.get(item.sku, 0)
                if item.quantity > left:
                    raise OutOfStock(item.sku, item.quantity, left)
            for item in items:
                self._stock[item.sku] -= item.quantity
            total = sum(i.price * i.quantity for i in items)
            if coupon == "HALF":
                total /= 2
            if express:
                total += 9.5
            return Receipt(f"order-{next(self._orders)}", list(items), round(total, 2),
                           {i.sku: self._stock[i.sku] for i in items})

    def echo(self, value: Any) -> Any:
        return value

    def stock(self, sku: str) -> int:
        with self._lock:
            return self._stock.get(sku, 0)

    def audit(self) -> None:
        raise AuditLogUnavailable("audit log is on a disk that is not mounted")
