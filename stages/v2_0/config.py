"""Configuration of v2.0: v1.0's settings plus the choice of serializers."""

from __future__ import annotations

from dataclasses import dataclass

from stages.v1_0 import config as v1_0
from stages.v2_0.errors import ConfigError
from stages.v2_0.serializers import SERIALIZERS

__all__ = ["ServerConfig", "ClientConfig"]

_KNOWN = tuple(s.name for s in SERIALIZERS.values())


def _check_serializer(owner: object, name: object) -> None:
    if name not in _KNOWN:
        raise ConfigError(f"{type(owner).__name__}: unknown serializer {name!r} "
                          f"(known: {', '.join(_KNOWN)})")


@dataclass(frozen=True, kw_only=True)
class ServerConfig(v1_0.ServerConfig):
    """Server settings of v1.0, plus:

    Attributes:
        serializers: the serializers this server accepts, by name. A request in any other is
            refused before its body is decoded. Pickle loads through an allow-list either way;
            a server that wants no pickle at all lists only ``("protobuf",)``.
        send_tracebacks: send the traceback of an exception a method raised to the caller.
            Off by default: a deployed server tells a caller the exception's type and message,
            not its source files and line numbers. The demos and notebooks turn it on, where a
            learner wants to see where the remote error came from.
    """

    serializers: tuple[str, ...] = ("pickle", "protobuf")
    send_tracebacks: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.serializers, tuple) or not self.serializers:
            raise ConfigError(f"ServerConfig.serializers must be a non-empty tuple, got "
                              f"{self.serializers!r}")
        for name in self.serializers:
            _check_serializer(self, name)
        if not isinstance(self.send_tracebacks, bool):
            raise ConfigError(f"ServerConfig.send_tracebacks must be a bool, got "
                              f"{self.send_tracebacks!r}")


@dataclass(frozen=True, kw_only=True)
class ClientConfig(v1_0.ClientConfig):
    """Client settings of v1.0, plus:

    Attributes:
        serializer: the serializer proxies use unless told otherwise (``pickle`` or
            ``protobuf``).
    """

    serializer: str = "pickle"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_serializer(self, self.serializer)
