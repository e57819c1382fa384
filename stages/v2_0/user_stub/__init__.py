"""The demo stub package: interfaces and data types, shared by provider and consumer.

It plays the part of a Java ``serverXXX-stub.jar``: the provider implements these interfaces
(``stages.v2_0.provider``), the consumer calls them (``stages.v2_0.consumer``), and neither
imports the other.
"""

from stages.v2_0.user_stub.api import NAMESPACE, InventoryApi, UserApi
from stages.v2_0.user_stub.types import Dimensions, Item, OutOfStock, Receipt, User, UserNotFound

__all__ = ["NAMESPACE", "UserApi", "InventoryApi", "User", "Item", "Dimensions", "Receipt",
           "UserNotFound", "OutOfStock"]
