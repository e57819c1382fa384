"""The interfaces of the demo stub package.

A provider implements them; a consumer calls them through a proxy. Both import this module, and
nothing else of each other.
"""

from __future__ import annotations

import abc
from typing import Any

from stages.v2_0.api import rpc_api
from stages.v2_0.user_stub.types import Dimensions, Item, OutOfStock, Receipt, User, UserNotFound

__all__ = ["NAMESPACE", "UserApi", "InventoryApi"]

NAMESPACE = "walkthrough"


@rpc_api(namespace=NAMESPACE, types=(User,), exceptions=(UserNotFound,))
class UserApi(abc.ABC):
    """Users by id."""

    @abc.abstractmethod
    def get_user(self, user_id: int) -> User:
        """The user with this id. Raises UserNotFound for an id nobody has."""

    @abc.abstractmethod
    def find_users(self, prefix: str, *, limit: int = 10) -> list[User]:
        """Users whose name starts with ``prefix``, at most ``limit`` of them."""


@rpc_api(namespace=NAMESPACE, types=(Item, Dimensions, Receipt), exceptions=(OutOfStock,))
class InventoryApi(abc.ABC):
    """An API that exercises what real APIs carry: every plain type, nested data types,
    optional and keyword arguments, a declared and an undeclared exception."""

    @abc.abstractmethod
    def order(self, items: list[Item], *, coupon: str | None = None,
              express: bool = False) -> Receipt:
        """Order items; raises OutOfStock (declared) when there are not enough left."""

    @abc.abstractmethod
    def echo(self, value: Any) -> Any:
        """Return the value unchanged: ints, floats, str, bytes, bool, None, lists, dicts."""

    @abc.abstractmethod
    def stock(self, sku: str) -> int:
        """Units left of an item."""

    @abc.abstractmethod
    def audit(self) -> None:
        """Fails with an exception type that the interface does not declare."""
