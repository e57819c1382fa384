"""The demo service of v1.0: a tiny user directory.

In v1.0 a service is just functions that take string parameters and return a mapping of fields;
the server publishes them under names chosen by the original design (``userService:getUser``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["UserService", "SERVICE_NAME"]

SERVICE_NAME = "userService"


class UserService:
    """Users kept in memory. Any id is known; its fields are derived from the id."""

    _NAMES = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov")

    def get_user(self, id: str) -> dict[str, object]:
        """Return the user with this id.

        Raises:
            ValueError: the id is not a positive integer.
        """
        user_id = int(id)
        if user_id <= 0:
            raise ValueError(f"user id must be positive, got {user_id}")
        name = self._NAMES[user_id % len(self._NAMES)]
        email = name.split()[0].lower() + f".{user_id}@example.org"
        return {"id": user_id, "name": name, "email": email}

    def echo(self, text: str = "") -> dict[str, object]:
        """Return the text unchanged (used by benchmarks to vary the payload size)."""
        return {"text": text}

    def methods(self) -> Mapping[str, Callable[..., Any]]:
        """The wire name of each published method."""
        return {"getUser": self.get_user, "echo": self.echo}
