"""APIs as interfaces: what a caller and a provider agree on.

In v1.0 a caller wrote ``userService:getUser?id=123456`` by hand. From v2.0 on, an API is a Python
interface, an abstract class with type hints, published in a *stub package* that both sides
import (the counterpart of a Java ``serverXXX-stub.jar``)::

    @rpc_api(namespace="walkthrough", types=(User,), exceptions=(UserNotFound,))
    class UserApi(abc.ABC):
        @abc.abstractmethod
        def get_user(self, user_id: int) -> User: ...

The decorator records an :class:`ApiSpec` on the class: the API's **address**, its methods with
their signatures, and the data and exception types that may cross the wire with it.

The address is the service namespace plus the interface's fully qualified name::

    <namespace>/<module>.<qualified class name>
    walkthrough/stages.v2_0.user_stub.api.UserApi

The namespace separates deployments or teams that publish interfaces with the same name; the
qualified name makes the address unique within a namespace without anyone assigning it. A server
binds an implementation to an address, and a client's request names the address and a method.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from stages.v2_0.errors import ApiDefinitionError

__all__ = ["ApiSpec", "MethodSpec", "rpc_api", "api_spec", "address_of"]

T = TypeVar("T", bound=type)

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


@dataclass(frozen=True)
class MethodSpec:
    """One remotely callable method: its name and its signature (``self`` removed)."""

    name: str
    signature: inspect.Signature

    def check_arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError, as a local call would, if the arguments do not fit the signature."""
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None


@dataclass(frozen=True)
class ApiSpec:
    """What the :func:`rpc_api` decorator learned about an interface.

    Attributes:
        interface: the interface class itself.
        namespace: the service namespace.
        address: ``namespace/module.QualifiedName``.
        methods: the callable methods, by name. Only these can be called remotely.
        types: data classes that may travel as arguments or results.
        exceptions: exception classes that are raised again as themselves on the caller's side.
    """

    interface: type
    namespace: str
    address: str
    methods: Mapping[str, MethodSpec]
    types: tuple[type, ...] = field(default=())
    exceptions: tuple[type[BaseException], ...] = field(default=())


def rpc_api(
    *,
    namespace: str,
    types: Iterable[type] = (),
    exceptions: Iterable[type[BaseException]] = (),
) -> Callable[[T], T]:
    """Mark a class as an RPC interface and record its :class:`ApiSpec` on it.

    Every public function defined on the class (or inherited from another interface) becomes a
    remote method; names starting with ``_`` never do.

    Args:
        namespace: the service namespace (letters, digits, ``_ . -``).
        types: data classes used in the interface's arguments and results.
        exceptions: exception classes the interface declares.

    Raises:
        ApiDefinitionError: bad namespace, no methods, or a declared exception that is not an
            Exception subclass.
    """
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ApiDefinitionError(f"invalid service namespace {namespace!r}")
    types = tuple(types)
    exceptions = tuple(exceptions)
    for exc_type in exceptions:
        if not (isinstance(exc_type, type) and issubclass(exc_type, Exception)):
            raise ApiDefinitionError(f"declared exception {exc_type!r} is not an Exception class")

    def decorate(cls: T) -> T:
        methods = {}
        for name, member in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_"):
                continue
            signature = inspect.signature(member)
            params = list(signature.parameters.values())
            if not params or params[0].name != "self":
                raise ApiDefinitionError(f"{cls.__qualname__}.{name} must be a plain method")
            methods[name] = MethodSpec(name, signature.replace(parameters=params[1:]))
        if not methods:
            raise ApiDefinitionError(f"{cls.__qualname__} declares no public methods")
        spec = ApiSpec(
            interface=cls,
            namespace=namespace,
            address=f"{namespace}/{cls.__module__}.{cls.__qualname__}",
            methods=MappingProxyType(methods),
            types=types,
            exceptions=exceptions,
        )
        cls.__rpc_api__ = spec  # type: ignore[attr-defined]
        return cls

    return decorate


def api_spec(interface: object) -> ApiSpec:
    """The :class:`ApiSpec` of an interface.

    Raises:
        ApiDefinitionError: ``interface`` is not a class decorated with :func:`rpc_api`.
    """
    spec = interface.__dict__.get("__rpc_api__") if isinstance(interface, type) else None
    if not isinstance(spec, ApiSpec):
        raise ApiDefinitionError(f"{interface!r} is not an RPC interface (use @rpc_api)")
    return spec


def address_of(interface: type) -> str:
    """The address of an interface: ``namespace/module.QualifiedName``."""
    return api_spec(interface).address
