"""Data types and exceptions of the demo APIs: what provider and consumer both need to know."""

from __future__ import annotations

from dataclasses import dataclass, field

from stages.v2_0.serializers import proto_type
from stages.v2_0.user_stub import user_pb2

__all__ = ["User", "Dimensions", "Item", "Receipt", "UserNotFound", "OutOfStock"]


@proto_type(user_pb2.User)
@dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str


@proto_type(user_pb2.Dimensions)
@dataclass(frozen=True)
class Dimensions:
    width_cm: float
    height_cm: float
    depth_cm: float


@proto_type(user_pb2.Item)
@dataclass(frozen=True)
class Item:
    sku: str
    title: str
    price: float
    quantity: int = 1
    active: bool = True
    thumbnail: bytes = b""
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    dimensions: Dimensions | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        # The stub's own rules. They hold for an Item built here and for one that arrives over
        # the wire, whichever serializer carried it (see stages.v2_0.limits).
        if self.quantity < 0:
            raise ValueError(f"quantity must be >= 0, got {self.quantity}")
        if not self.price >= 0:  # "not >=" refuses NaN too
            raise ValueError(f"price must be >= 0, got {self.price}")


@proto_type(user_pb2.Receipt)
@dataclass(frozen=True)
class Receipt:
    order_id: str
    items: list[Item]
    total: float
    stock_left: dict[str, int] = field(default_factory=dict)


class UserNotFound(LookupError):
    """No user has this id. Declared by UserApi, so it crosses the wire as itself."""

    def __init__(self, user_id: int) -> None:
        super().__init__(user_id)
        self.user_id = user_id

    def __str__(self) -> str:
        return f"no user with id {self.user_id}"


class OutOfStock(Exception):
    """Not enough of an item left. Declared by InventoryApi."""

    def __init__(self, sku: str, wanted: int, left: int) -> None:
        super().__init__(sku, wanted, left)
        self.sku, self.wanted, self.left = sku, wanted, left

    def __str__(self) -> str:
        return f"{self.sku}: wanted {self.wanted}, {self.left} left"
