"""The config center's settings (v3.3): what can be changed at run time, parsed and checked whole.

An operator steers the consumers of an API without restarting them by writing one JSON document
to ZooKeeper, at ``/rpc/<namespace>/<interface>/config`` (next to ``providers`` and
``consumers``)::

    {
      "api":       {"timeout": 2.0, "mode": "failover", "idempotent": true, "retries": 2},
      "methods":   {"get_user": {"timeout": 0.5}, "delete_user": {"force_fallback": true}},
      "balancer":  "p2c",
      "providers": {"127.0.0.1:9001": {"weight": 50}, "127.0.0.1:9002": {"enabled": false}}
    }

Every field is optional. ``api`` holds what applies to every method, ``methods`` what applies to
one (over ``api``); ``balancer`` names the strategy; ``providers`` overrides a provider's weight or
takes it out of rotation (``"enabled": false``: traffic shifting without touching the provider).

**Precedence**, highest first: what a call says itself (``rpc_timeout``, a proxy's ``timeout=``),
then the config center (method, then API), then the code (``set_policy``, ``ClientConfig``).

**A change is validated as a whole** by :meth:`ApiSettings.parse`: unknown fields, a wrong type, a
timeout that is not a finite number > 0, an unknown mode or strategy, ``failover`` without
``idempotent`` in the same or an enclosing scope, malformed JSON or a document over 64 KiB: the
document is refused with a :class:`ConfigError` that says why, and the client keeps the last good
settings (it logs the refusal and counts it). Bytes read from ZooKeeper are treated as hostile like
any others: sizes and counts are bounded before anything is built.

Pure: bytes in, settings out. The watching is the registry's, the applying the client's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from stages.v1_0.errors import clip
from stages.v3_x.balancer import STRATEGIES
from stages.v3_x.errors import ConfigError
from stages.v3_x.policy import MODES

__all__ = ["ApiSettings", "CallSettings", "ProviderSettings", "MAX_SETTINGS_BYTES", "config_path"]

#: The largest settings document read.
MAX_SETTINGS_BYTES: Final = 64 * 1024
#: Methods and providers one document may name.
_MAX_ENTRIES: Final = 1000
_MAX_TIMEOUT: Final = 3600.0


def config_path(api_address: str, root: str = "/rpc") -> str:
    """``/rpc/<namespace>/<interface>/config``."""
    return f"{root}/{api_address}/config"


@dataclass(frozen=True)
class CallSettings:
    """What the config center sets for calls (None: not set here)."""

    timeout: float | None = None
    mode: str | None = None
    idempotent: bool | None = None
    retries: int | None = None
    force_fallback: bool | None = None

    def over(self, base: CallSettings) -> CallSettings:
        """These settings, with what they leave unset taken from ``base``."""
        return CallSettings(*(mine if mine is not None else theirs for mine, theirs in
                              zip(_values(self), _values(base), strict=True)))


@dataclass(frozen=True)
class ProviderSettings:
    weight: int | None = None
    enabled: bool = True


@dataclass(frozen=True)
class ApiSettings:
    """One API's settings from the config center. ``version`` is the ZooKeeper node's version
    (how many times it was written), which every client that applied it reports."""

    api: CallSettings = CallSettings()
    methods: Mapping[str, CallSettings] = field(default_factory=lambda: MappingProxyType({}))
    balancer: str | None = None
    providers: Mapping[str, ProviderSettings] = field(
        default_factory=lambda: MappingProxyType({}))
    version: int = -1

    def for_method(self, method: str) -> CallSettings:
        own = self.methods.get(method)
        return own.over(self.api) if own is not None else self.api

    @classmethod
    def parse(cls, data: bytes, version: int = -1) -> ApiSettings:
        """Parse and check a whole document; an empty node means "nothing set".

        Raises:
            ConfigError: what is wrong with it, in a sentence.
        """
        if len(data) > MAX_SETTINGS_BYTES:
            raise ConfigError(f"settings of {len(data)} bytes (at most {MAX_SETTINGS_BYTES})")
        if not data.strip():
            return cls(version=version)
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError(clip(f"settings are not JSON: {exc}")) from None
        _object(doc, "the settings", {"api", "methods", "balancer", "providers"})
        api = _call_settings(doc.get("api", {}), "api")
        methods = _entries(doc.get("methods", {}), "methods")
        parsed = {name: _call_settings(value, f"methods.{name}") for name, value in methods.items()}
        for name, settings in parsed.items():
            _check_idempotent(settings.over(api), f"methods.{name}")
        _check_idempotent(api, "api")
        balancer = doc.get("balancer")
        if balancer is not None and balancer not in STRATEGIES:
            raise ConfigError(clip(f"balancer: unknown strategy {balancer!r} (known: "
                                   f"{', '.join(STRATEGIES)})"))
        providers = {key: _provider_settings(value, f"providers.{key}")
                     for key, value in _entries(doc.get("providers", {}), "providers").items()}
        return cls(api, MappingProxyType(parsed), balancer, MappingProxyType(providers), version)


def _values(settings: CallSettings) -> tuple[Any, ...]:
    return (settings.timeout, settings.mode, settings.idempotent, settings.retries,
            settings.force_fallback)


def _object(value: Any, what: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object")
    if unknown := set(value) - allowed:
        raise ConfigError(clip(f"{what}: unknown fields {sorted(map(str, unknown))} (known: "
                               f"{', '.join(sorted(allowed))})"))
    return value


def _entries(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) > _MAX_ENTRIES:
        raise ConfigError(f"{what} must be a JSON object of at most {_MAX_ENTRIES} entries")
    for name in value:
        if not 0 < len(name) <= 200:
            raise ConfigError(f"{what}: names are 1 to 200 characters")
    return value


def _call_settings(value: Any, what: str) -> CallSettings:
    doc = _object(value, what, {"timeout", "mode", "idempotent", "retries", "force_fallback"})
    timeout = doc.get("timeout")
    if timeout is not None and (type(timeout) not in (int, float) or not math.isfinite(timeout)
                                or not 0 < timeout <= _MAX_TIMEOUT):
        raise ConfigError(clip(f"{what}.timeout must be a number of seconds in (0, "
                               f"{_MAX_TIMEOUT:g}], got {timeout!r}"))
    mode = doc.get("mode")
    if mode is not None and mode not in MODES:
        raise ConfigError(clip(f"{what}.mode must be one of {', '.join(MODES)}, got {mode!r}"))
    retries = doc.get("retries")
    if retries is not None and (type(retries) is not int or not 0 <= retries <= 4):
        raise ConfigError(clip(f"{what}.retries must be an int from 0 to 4, got {retries!r}"))
    for flag in ("idempotent", "force_fallback"):
        if flag in doc and type(doc[flag]) is not bool:
            raise ConfigError(clip(f"{what}.{flag} must be true or false, got {doc[flag]!r}"))
    return CallSettings(float(timeout) if timeout is not None else None, mode,
                        doc.get("idempotent"), retries, doc.get("force_fallback"))


def _check_idempotent(settings: CallSettings, what: str) -> None:
    if settings.mode in ("failover", "forking") and settings.idempotent is not True:
        raise ConfigError(f"{what}: {settings.mode} sends a call more than once: it needs "
                          "\"idempotent\": true")


def _provider_settings(value: Any, what: str) -> ProviderSettings:
    doc = _object(value, what, {"weight", "enabled"})
    weight = doc.get("weight")
    if weight is not None and (type(weight) is not int or not 0 <= weight <= 10_000):
        raise ConfigError(clip(f"{what}.weight must be an int from 0 to 10000, got {weight!r}"))
    enabled = doc.get("enabled", True)
    if type(enabled) is not bool:
        raise ConfigError(clip(f"{what}.enabled must be true or false, got {enabled!r}"))
    return ProviderSettings(weight, enabled)
