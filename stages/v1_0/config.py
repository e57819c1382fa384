"""Configuration of v1.0: one frozen, validated dataclass per side.

A configuration is built once, checked once (in ``__post_init__``), and never changed: to change
a setting, build a new object with :func:`dataclasses.replace`. Nothing reads a global.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.v1_0.errors import ConfigError
from stages.v1_0.protocol import DEFAULT_MAX_FRAME_SIZE

__all__ = ["ServerConfig", "ClientConfig", "check_positive"]


def check_positive(owner: object, *names: str) -> None:
    """Raise :class:`ConfigError` unless every named attribute of ``owner`` is a number > 0."""
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{type(owner).__name__}.{name} must be a number > 0, got {value!r}")


def _check_address(owner: object, host: str, port: int) -> None:
    if not isinstance(host, str) or not host:
        raise ConfigError(f"{type(owner).__name__}.host must be a non-empty string, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{type(owner).__name__}.port must be 0..65535, got {port!r}")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Server settings.

    Attributes:
        host, port: where to listen; port 0 lets the OS pick a free port.
        max_frame_size: largest request body accepted, in bytes.
        frame_timeout: seconds a started frame may take to arrive completely. A peer that sends
            half a frame and then trickles (or stops) is disconnected after this, so it cannot
            hold a connection open for ever ("slowloris").
        idle_timeout: seconds a connection may stay silent between frames before it is closed.
    """

    host: str = "127.0.0.1"
    port: int = 0
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    frame_timeout: float = 10.0
    idle_timeout: float = 60.0

    def __post_init__(self) -> None:
        _check_address(self, self.host, self.port)
        check_positive(self, "max_frame_size", "frame_timeout", "idle_timeout")


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Client settings.

    Attributes:
        timeout: seconds a whole call (connect, send, answer) may take.
        max_frame_size: largest response body accepted, in bytes.
    """

    timeout: float = 5.0
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE

    def __post_init__(self) -> None:
        check_positive(self, "timeout", "max_frame_size")
