"""Service registration and discovery (v3.0): who provides an interface, and where.

Up to v2.1 a client was given a server's address. From v3.0 on, providers *register* in a
registry and consumers *discover* them there, so providers can come, go and move without anyone
reconfiguring the consumers. The registry is ZooKeeper; its tree, readable with ZooKeeper's own
``zkCli.sh`` (``ls /rpc/walkthrough/...``), is::

    /rpc
    └── <namespace>                               walkthrough
        └── <interface>                           stages.v2_0.user_stub.api.UserApi
            ├── providers
            │   ├── 127.0.0.1:40111               ephemeral; data: the provider's JSON
            │   └── 127.0.0.1:40112
            └── consumers
                └── 127.0.0.1:4711-3f2a...        ephemeral; data: the consumer's JSON

The ``<namespace>/<interface>`` part is the API's address from v2.0, so an interface's node is
found without anyone assigning it. A provider's node holds its metadata as JSON
(:class:`ProviderInfo`: address, weight, serializers, methods, version, start time).

How the pieces behave, and why:

* **Ephemeral nodes.** A provider's node belongs to its ZooKeeper *session*. The session is kept
  alive by the client library's own pings; if the provider dies (killed, frozen, cut off), the
  pings stop, the session expires after its timeout, and ZooKeeper deletes the node. The session
  *is* the provider's heartbeat towards the registry: no other is needed.
* **Watches fire once, and events can be missed.** ZooKeeper tells a watcher *that* a node's
  children changed, once; changes made before the watch is set again, or while disconnected, are
  not reported one by one. So on every event, and after every reconnection, a consumer re-reads
  the whole list. Its view is then always a recent copy of the registry, never a sum of deltas.
* **Suspended is not lost.** When the connection to ZooKeeper drops, the session may still be
  alive: the consumer keeps using its last known list and the provider deregisters nothing.
  Only when the session is declared expired (LOST) are nodes and watches gone, and then the
  provider registers again as soon as it can.
* **Re-registration checks the owner.** After an expiry, the old session's node may still be
  there for a while (ZooKeeper deletes it when it notices the expiry). Creating the new node
  then fails with "node exists"; a provider that took that as success would stay unregistered
  for good once the old node goes. So the provider reads the node's owner: its own session's
  node is kept, another session's is deleted and created again. A watch on its own node,
  set each time the node is made or checked, re-creates it if it ever disappears while the
  provider lives (and if it is already gone when the watch is set, at once: a node deleted
  between two reads must not go unnoticed).
* **ZooKeeper's callbacks run on its threads**, and must not block there. Every callback here
  only hands the event to the asyncio event loop (``call_soon_threadsafe``); the loop does the
  reading and writing through ``asyncio.to_thread``.
* **A consumer does not wait for ZooKeeper to learn that a provider died.** A killed provider's
  connections fail at once (the kernel resets them), and a failed connection takes the provider
  out of the candidates (see :mod:`stages.v3_x.client`). A frozen one is set aside after the
  first call it leaves unanswered (v3.2's outlier detection), though its kernel still accepts
  connections. The registry catches up when the session expires (``session_timeout``;
  notebook 04 measures both paths).

**Protected interfaces (ZooKeeper ACLs).** By default any client of ZooKeeper may write anywhere:
whoever reaches it could register a provider of their own and have the consumers call it. A
registry given credentials (``"user:password"``, ZooKeeper's *digest* scheme) protects the nodes
that steer the consumers with an ACL (access control list): its identity may do everything, anyone
may read.

* The first provider with credentials to register makes the ``providers`` node with that ACL, or
  protects it if a provider without credentials made it before, open (that provider's entry
  stays until its session ends). Its own entries get the same ACL, so that nobody else can change
  or delete them. A provider without the credentials, or with other ones, is refused
  (:class:`RegistryNotAllowed`) at once and for good: it does not try again.
* The ``config`` node (v3.3's settings) steers every consumer as surely: ``"enabled": false``
  takes a provider out of rotation. It is protected when it is written with credentials
  (:meth:`ZooKeeperRegistry.write_config`, ``config set``), and by
  :meth:`ZooKeeperRegistry.protect`, an operator's way to lock an interface down at once.
* Consumers need no credentials: they only read those two nodes. The parents (``/rpc``, the
  namespace, the interface) stay open, so that consumers can add their entries under
  ``consumers``. The price: a node *without children* may be deleted by anyone who may delete in
  its parent, so an empty ``providers`` node (no provider running) can be deleted and made again,
  open. The next provider with credentials protects it again, each time it registers.
* kazoo sends the credentials again after every reconnection, new sessions included, so a
  provider re-registering after an expired session still has its rights. It also logs every
  request it sends at DEBUG level, the credentials too; this module blanks them in kazoo's log.

Everything read from ZooKeeper is treated as hostile: a node's data must parse as a
:class:`ProviderInfo` within size limits, and an entry that does not is skipped (and logged),
never trusted and never allowed to break the other entries.

:class:`StaticRegistry` offers the same interface over a fixed list of addresses, for v2-style
direct connection without ZooKeeper.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import json
import logging
import math
import os
import posixpath
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import Auth
from kazoo.protocol.states import KazooState
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.security import ACL, ANYONE_ID_UNSAFE, Permissions, make_acl, make_digest_acl

from stages.v1_0.errors import clip
from stages.v3_x.errors import (
    ConfigError,
    RegistryError,
    RegistryNotAllowed,
    RegistryUnavailable,
)
from stages.v3_x.settings import config_path

__all__ = [
    "ProviderInfo", "Registry", "StaticRegistry", "ZooKeeperRegistry", "Listener",
    "providers_path", "consumers_path", "ROOT", "MAX_NODE_BYTES", "MAX_PROVIDERS", "STATES_KEPT",
    "RegistryNotAllowed",
]

log = logging.getLogger(__name__)

#: The registry's top node.
ROOT: Final = "/rpc"
#: Largest provider entry read (ZooKeeper allows 1 MB per node; an entry is a few hundred bytes).
MAX_NODE_BYTES: Final = 16 * 1024
#: Providers of one interface read at most; more are ignored (and logged).
MAX_PROVIDERS: Final = 10_000
#: Connection state changes a registry remembers (``ZooKeeperRegistry.states``).
STATES_KEPT: Final = 1_000

_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-:]{0,252}\Z")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}\Z")
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{0,64}\Z")
_USER = re.compile(r"[A-Za-z0-9_.@\-]{1,64}\Z")
_MAX_PASSWORD = 256


def providers_path(api_address: str, root: str = ROOT) -> str:
    """``/rpc/<namespace>/<interface>/providers`` for an API address ``namespace/interface``."""
    return f"{root}/{api_address}/providers"


def consumers_path(api_address: str, root: str = ROOT) -> str:
    """``/rpc/<namespace>/<interface>/consumers``."""
    return f"{root}/{api_address}/consumers"


def _split_credentials(credentials: str) -> tuple[str, str]:
    """``"user:password"`` as ``(user, password)``, checked.

    The password may hold ``:`` (ZooKeeper splits at the first one); the user is 1 to 64 letters,
    digits, ``_``, ``.``, ``@`` or ``-``. The messages never quote the value: it holds a password.

    Raises:
        ConfigError: not of that form.
    """
    if not isinstance(credentials, str):
        raise ConfigError("credentials must be a string, 'user:password'")
    user, colon, password = credentials.partition(":")
    if not colon:
        raise ConfigError("credentials must be 'user:password': there is no ':'")
    if not _USER.match(user):
        raise ConfigError("credentials must be 'user:password', the user 1 to 64 letters, "
                          "digits, '_', '.', '@' or '-'")
    if not 0 < len(password) <= _MAX_PASSWORD or not password.isprintable():
        raise ConfigError(f"credentials must be 'user:password', the password 1 to "
                          f"{_MAX_PASSWORD} printable characters")
    return user, password


@dataclass(frozen=True, kw_only=True)
class ProviderInfo:
    """What a provider says about itself in its registry entry.

    Attributes:
        host, port: where to connect.
        weight: its share of the traffic relative to the others (balancers that use weights);
            0 takes it out of rotation without deregistering it.
        serializers: the serializers it accepts.
        methods: the interface's methods it serves.
        version: the provider's software version (free text).
        started_at: when it started (seconds since the epoch).
        features: what it understands beyond v2.1's protocol (v3.2: ``deadline`` and
            ``cancel``, see :mod:`stages.v3_x.deadline`); unknown names are kept and ignored.
        token: what a consumer must present on each connection before its calls are run (v3.3,
            see :mod:`stages.v3_x.security`); empty when the provider asks for none.
        settings_version: the version of the API's config-center settings the provider has
            checked and holds (v3.3), -1 for none: operators compare it across instances.
    """

    host: str
    port: int
    weight: int = 100
    serializers: tuple[str, ...] = ("pickle", "protobuf")
    methods: tuple[str, ...] = ()
    version: str = ""
    started_at: float = 0.0
    features: tuple[str, ...] = ()
    token: str = ""
    settings_version: int = -1

    @property
    def key(self) -> str:
        """``host:port``: the entry's node name, and the provider's identity."""
        return f"{self.host}:{self.port}"

    def to_json(self) -> bytes:
        """The node's data."""
        return json.dumps({"host": self.host, "port": self.port, "weight": self.weight,
                           "serializers": list(self.serializers), "methods": list(self.methods),
                           "version": self.version, "started_at": self.started_at,
                           "features": list(self.features), "token": self.token,
                           "settings_version": self.settings_version},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, *, key: str | None = None) -> ProviderInfo:
        """Parse and validate a node's data; ``key`` is the node's name, which must match.

        Unknown fields are ignored (a newer provider may say more); known ones must have their
        type and range.

        Raises:
            ValueError: the data is too large, not JSON, or a field is missing or invalid.
        """
        if len(data) > MAX_NODE_BYTES:
            raise ValueError(f"entry of {len(data)} bytes (at most {MAX_NODE_BYTES})")
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(clip(f"not JSON: {exc}")) from None
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        host, port = doc.get("host"), doc.get("port")
        if not isinstance(host, str) or not _HOST.match(host):
            raise ValueError(clip(f"bad host {host!r}"))
        if type(port) is not int or not 0 < port < 65536:
            raise ValueError(clip(f"bad port {port!r}"))
        weight = doc.get("weight", 100)
        if type(weight) is not int or not 0 <= weight <= 10_000:
            raise ValueError(clip(f"bad weight {weight!r} (an int from 0 to 10000)"))
        started_at = doc.get("started_at", 0.0)
        if type(started_at) not in (int, float) or not math.isfinite(started_at):
            raise ValueError(clip(f"bad started_at {started_at!r}"))
        version = doc.get("version", "")
        if not isinstance(version, str) or len(version) > 100:
            raise ValueError("bad version")
        token = doc.get("token", "")
        if not isinstance(token, str) or not _TOKEN.match(token):
            raise ValueError("bad token (at most 64 letters, digits, '-' or '_')")
        settings_version = doc.get("settings_version", -1)
        if type(settings_version) is not int or not -1 <= settings_version < 2**31:
            raise ValueError(clip(f"bad settings_version {settings_version!r}"))
        info = cls(host=host, port=port, weight=weight, token=token,
                   settings_version=settings_version,
                   serializers=_names(doc.get("serializers", ["pickle", "protobuf"]), "serializers"),
                   methods=_names(doc.get("methods", []), "methods"),
                   version=version, started_at=float(started_at),
                   features=_names(doc.get("features", []), "features"))
        if key is not None and key != info.key:
            raise ValueError(clip(f"node {key!r} holds the entry of {info.key}"))
        return info


def _names(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 256 \
            or not all(isinstance(v, str) and _NAME.match(v) for v in value):
        raise ValueError(f"bad {what}: a list of at most 256 names")
    return tuple(value)


#: Called with the current providers of an interface, by key, each time the view may have changed.
Listener = Callable[[Mapping[str, ProviderInfo]], None]
#: Called with the bytes of an API's settings node and its version (v3.3's config center).
ConfigListener = Callable[[bytes, int], None]


class Registry(abc.ABC):
    """Where providers register and consumers discover them. Used from one asyncio event loop;
    listeners are called on that loop."""

    async def start(self) -> None:  # noqa: B027 (optional: most registries connect)
        """Connect (a no-op for registries that need no connection)."""

    @abc.abstractmethod
    async def register(self, api_address: str, info: ProviderInfo) -> None:
        """Announce that ``info`` provides the API at ``api_address``."""

    @abc.abstractmethod
    async def unregister(self, api_address: str, info: ProviderInfo) -> None:
        """Withdraw the announcement (a graceful shutdown's first step)."""

    @abc.abstractmethod
    async def watch(self, api_address: str, listener: Listener) -> None:
        """Call ``listener`` with the current providers now, and again whenever they change.

        Raises:
            RegistryUnavailable: the first list could not be read in time.
        """

    async def watch_config(self, api_address: str,  # noqa: B027 (optional: v3.3)
                           listener: ConfigListener) -> None:
        """Call ``listener(data, version)`` with the API's settings node (``b""`` and -1 when
        there is none) now and at every change, on the caller's loop. A registry without a
        config center never calls it."""

    async def report_settings(self, api_address: str,  # noqa: B027 (optional: v3.3)
                              version: int) -> None:
        """Say, in this consumer's entry, which version of the API's settings it applied (so
        that an operator sees whether every consumer runs the same one)."""

    async def register_consumer(self, api_address: str) -> None:  # noqa: B027 (optional)
        """Announce a consumer of the API (for operators; nothing depends on it)."""

    async def aclose(self) -> None:  # noqa: B027 (optional)
        """Release the connection; a provider's entries disappear with it."""

    def describe(self) -> str:
        """A short description for messages (``zookeeper 127.0.0.1:2181``)."""
        return type(self).__name__


class StaticRegistry(Registry):
    """A fixed list of providers for every interface: v2's direct connection, in v3's terms.

    Args:
        addresses: ``host:port`` strings, or :class:`ProviderInfo` entries.
    """

    def __init__(self, addresses: Iterable[str | ProviderInfo]) -> None:
        infos = []
        for address in addresses:
            if isinstance(address, ProviderInfo):
                infos.append(address)
            else:
                host, _, port = address.rpartition(":")
                infos.append(ProviderInfo(host=host, port=int(port)))
        self._providers = {info.key: info for info in infos}

    async def register(self, api_address: str, info: ProviderInfo) -> None:
        pass  # a static list is written by whoever configures it

    async def unregister(self, api_address: str, info: ProviderInfo) -> None:
        pass

    async def watch(self, api_address: str, listener: Listener) -> None:
        listener(dict(self._providers))

    def describe(self) -> str:
        return f"static list {', '.join(self._providers)}"


@dataclass
class _Watched:
    """One interface a consumer watches: its listeners, and the refresh in progress."""

    path: str
    listeners: list[Listener] = field(default_factory=list)
    refreshing: asyncio.Task[None] | None = None
    again: bool = False
    providers: dict[str, ProviderInfo] = field(default_factory=dict)


class ZooKeeperRegistry(Registry):
    """The registry in ZooKeeper, through kazoo.

    Args:
        hosts: ZooKeeper's connect string (``host:port[,host:port...]``).
        session_timeout: seconds after which ZooKeeper expires a silent session, deleting its
            provider's entries. The server clamps it to between 2 and 20 of its ticks.
        connect_timeout: seconds to wait for the first connection before giving up.
        operation_timeout: seconds one read or write may take before it fails (ZooKeeper
            unreachable).
        root: the registry's top node.
        credentials: ``"user:password"``, a ZooKeeper *digest* identity: the nodes this registry
            makes for its providers are protected with it (see the module's docstring), and it
            may use nodes protected with it. None: anonymous, like any ZooKeeper client.

    Raises:
        ConfigError: ``credentials`` not of the form ``user:password``.
    """

    def __init__(self, hosts: str, *, session_timeout: float = 10.0,
                 connect_timeout: float = 10.0, operation_timeout: float = 10.0,
                 root: str = ROOT, credentials: str | None = None) -> None:
        self.hosts = hosts
        self.root = root
        self.connect_timeout = connect_timeout
        self.operation_timeout = operation_timeout
        #: The digest identity this registry acts as; None when it has no credentials.
        self.user: str | None = None
        #: The ACL of the nodes it protects: its identity may do everything, anyone may read.
        #: (It holds a hash of the password, never the password.)
        self._acl: list[ACL] | None = None
        auth_data = None
        if credentials is not None:
            self.user, password = _split_credentials(credentials)
            self._acl = [make_digest_acl(self.user, password, all=True),
                         make_acl("world", "anyone", read=True)]
            # kazoo keeps auth_data and sends it again on every (re)connection.
            auth_data = [("digest", credentials)]
        self._zk = KazooClient(hosts=hosts, timeout=session_timeout, auth_data=auth_data)
        if credentials is not None:
            self._zk.logger.addFilter(_HIDE_CREDENTIALS)
        #: The providers nodes of the interfaces this registry registers in, when it protects them.
        self._protected: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: node path -> data, for every entry this process registered (re-created if lost)
        self._owned: dict[str, bytes] = {}
        #: This consumer's entry per API: its path and what it says.
        self._consumer_entries: dict[str, tuple[str, dict[str, Any]]] = {}
        self._watched: dict[str, _Watched] = {}
        self._lost = False
        self._closed = False
        #: (monotonic time, state) of the last :data:`STATES_KEPT` connection state changes, for
        #: the curious (a connection that flaps for months must not fill the memory).
        self.states: collections.deque[tuple[float, str]] = collections.deque(maxlen=STATES_KEPT)
        #: Every connection state change so far, by state (what the metrics count).
        self.state_counts: collections.Counter[str] = collections.Counter()

    def describe(self) -> str:
        return f"zookeeper {self.hosts}" + (f" as {self.user}" if self.user else "")

    @property
    def client(self) -> KazooClient:
        """The kazoo client (for tests that expire its session)."""
        return self._zk

    async def start(self) -> None:
        """Connect to ZooKeeper.

        Raises:
            RegistryUnavailable: no connection within ``connect_timeout``.
        """
        self._loop = asyncio.get_running_loop()
        self._zk.add_listener(self._on_state)
        try:
            await asyncio.to_thread(self._zk.start, self.connect_timeout)
        except KazooTimeoutError:
            await asyncio.to_thread(self._zk.close)
            raise RegistryUnavailable(f"ZooKeeper at {self.hosts} did not answer within "
                                      f"{self.connect_timeout:g} s") from None

    # -- providers -------------------------------------------------------------------------------

    async def register(self, api_address: str, info: ProviderInfo) -> None:
        """Announce ``info`` as a provider of the API (and keep it announced: see the module's
        docstring). With credentials, the interface's ``providers`` node is protected first.

        Raises:
            RegistryNotAllowed: the ``providers`` node is protected with other credentials than
                this registry's, or this registry has none. Nothing was created, and nothing
                will be tried again.
            RegistryUnavailable: ZooKeeper did not answer in time.
        """
        parent = providers_path(api_address, self.root)
        path = f"{parent}/{info.key}"
        data = info.to_json()
        if self._acl is not None:
            self._protected.add(parent)
        self._owned[path] = data
        try:
            await self._call(self._ensure_owned, path, data)
        except RegistryNotAllowed:
            # Refused for good: forget the entry, or every reconnection would try it again.
            self._owned.pop(path, None)
            raise

    async def unregister(self, api_address: str, info: ProviderInfo) -> None:
        path = f"{providers_path(api_address, self.root)}/{info.key}"
        if self._owned.pop(path, None) is not None and self._zk.connected:
            await self._call(self._delete_if_ours, path)

    def _ensure_owned(self, path: str, data: bytes) -> None:
        """Make ``path`` an ephemeral node of *this* session holding ``data``, and watch it
        (a worker thread). Under a protected parent, the parent is protected again first (it
        may have been deleted and made again, open, since) and the entry gets the same ACL."""
        parent = posixpath.dirname(path)
        protected = parent in self._protected
        for _ in range(5):
            try:
                if protected:
                    self._protect(parent, b"")
                    # No makepath here: it would give every missing parent the entry's ACL.
                    self._zk.create(path, data, acl=self._acl, ephemeral=True)
                else:
                    self._zk.create(path, data, ephemeral=True, makepath=True)
                self._watch_own(path)
                return
            except NodeExistsError:
                pass
            except NoNodeError:
                continue  # the parent was deleted in between: protect (make) it again
            except NoAuthError:
                raise RegistryNotAllowed(self._refusal("register under", parent)) from None
            try:
                current, stat = self._zk.get(path)
            except NoNodeError:
                continue  # deleted in between: create it again
            session = self._zk.client_id[0] if self._zk.client_id else None
            if stat.ephemeralOwner == session:
                if current != data:
                    self._zk.set(path, data, version=stat.version)
                self._watch_own(path)
                return
            # Another session's node under our address: our own expired session's, not yet
            # deleted (no other live process can hold our port). Replace it.
            log.info("replacing %s, left by an earlier session (0x%x)", path, stat.ephemeralOwner)
            try:
                self._zk.delete(path, version=stat.version)
            except NoNodeError:
                pass
        raise RegistryError(f"could not register {path}: it keeps changing under us")

    def _refusal(self, action: str, path: str) -> str:
        """Why ZooKeeper said NoAuth, and what to do about it."""
        if self.user is None:
            why = "the node is protected and this registry has no credentials"
        else:
            why = (f"the node is protected with other credentials than this registry's (user "
                   f"{self.user!r}, or the password differs)")
        return (f"not allowed to {action} {path}: {why}; give the registry the credentials "
                f"(--zk-auth user:password)")

    def _delete_if_ours(self, path: str) -> None:
        try:
            _, stat = self._zk.get(path)
            if self._zk.client_id and stat.ephemeralOwner == self._zk.client_id[0]:
                self._zk.delete(path, version=stat.version)
        except NoNodeError:
            pass

    def _watch_own(self, path: str) -> None:
        """Watch one of our nodes: any change to it (deleted, its data set) has it checked again.
        If it is gone already, check it now. (A one-shot watch, set again by every check; kazoo
        keeps one callback per node, however often it is set.)"""
        if self._zk.exists(path, watch=self._on_own_event) is None:
            self._soon(self._reregister, path)

    def _on_own_event(self, event: Any) -> None:
        # kazoo's thread: hand over to the loop, never block here.
        if not self._closed and event.path in self._owned:
            self._soon(self._reregister, event.path)

    async def _reregister(self, path: str) -> None:
        data = self._owned.get(path)
        if data is not None and not self._closed:
            try:
                await self._call(self._ensure_owned, path, data)
            except RegistryError as exc:
                log.warning("%s", exc)

    # -- protection ------------------------------------------------------------------------------

    async def protect(self, api_address: str) -> list[str]:
        """Protect an interface with this registry's credentials, at once: its ``providers`` node
        and its ``config`` node, each made if missing (the settings as ``{}``: nothing set, the
        code's defaults in force). For an operator locking an interface down before its
        providers start.

        Returns:
            The nodes made or protected now (none if they were protected already).

        Raises:
            ConfigError: this registry has no credentials.
            RegistryNotAllowed: a node is protected already, with other credentials.
        """
        if self._acl is None:
            raise ConfigError("protecting needs credentials: give the registry "
                              "credentials='user:password' (--zk-auth)")
        changed = []
        for path, data in ((providers_path(api_address, self.root), b""),
                           (config_path(api_address, self.root), b"{}")):
            if await self._call(self._protect, path, data):
                changed.append(path)
        return changed

    def _protect(self, path: str, data: bytes) -> bool:
        """Give the node at ``path`` this registry's ACL if anyone may change it (a worker thread).

        A missing node is made so, holding ``data``; its parents stay open. An open node, as a
        registry without credentials makes it, is protected (and that is logged). A node
        protected already, by this identity or another, is left alone: if this registry may not
        use it, what it does next is refused.

        Returns:
            Whether the node was made or protected.
        """
        assert self._acl is not None
        try:
            for _ in range(5):
                self._zk.ensure_path(posixpath.dirname(path))  # kazoo's default ACL: open
                try:
                    self._zk.create(path, data, acl=self._acl)
                    log.info("made %s, protected: only %r may change it", path, self.user)
                    return True
                except NodeExistsError:
                    pass
                try:
                    acl, stat = self._zk.get_acls(path)
                    if not _is_open(acl):
                        return False
                    self._zk.set_acls(path, self._acl, version=stat.aversion)
                    children = self._zk.get_children(path)
                except NoNodeError:
                    continue  # deleted in between: make it
                except BadVersionError:
                    continue  # its ACL changed in between (another provider protected it)
                made_before = (f"; the entries made before stay until their sessions end: "
                               f"{', '.join(sorted(children))}" if children else "")
                log.warning("protected %s, which anyone could change: only %r may change it now%s",
                            path, self.user, made_before)
                return True
        except NoAuthError:
            raise RegistryNotAllowed(self._refusal("protect", path)) from None
        raise RegistryError(f"could not protect {path}: it keeps changing under us")

    # -- the config center's node ----------------------------------------------------------------

    async def write_config(self, api_address: str, data: bytes) -> int:
        """Write the API's settings document as given (``config set`` checks it first), and return
        the node's new version. With credentials, the node is made protected, or protected if it
        is open.

        Raises:
            RegistryNotAllowed: the node is protected with other credentials than this
                registry's, or this registry has none.
        """
        return int(await self._call(self._write_config, config_path(api_address, self.root), data))

    def _write_config(self, path: str, data: bytes) -> int:
        try:
            self._zk.ensure_path(posixpath.dirname(path))  # the parents stay open
            for _ in range(5):
                try:
                    self._zk.create(path, data, acl=self._acl)  # None: kazoo's default, open
                    return 0
                except NodeExistsError:
                    pass
                if self._acl is not None:
                    self._protect(path, data)
                try:
                    return int(self._zk.set(path, data).version)
                except NoNodeError:
                    continue  # deleted in between: make it
        except NoAuthError:
            raise RegistryNotAllowed(self._refusal("write the settings at", path)) from None
        raise RegistryError(f"could not write {path}: it keeps changing under us")

    # -- consumers -------------------------------------------------------------------------------

    async def register_consumer(self, api_address: str) -> None:
        name = f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path = f"{consumers_path(api_address, self.root)}/{name}"
        self._consumer_entries[api_address] = path, {"pid": os.getpid(), "started_at": time.time()}
        await self._write_consumer(api_address)

    async def report_settings(self, api_address: str, version: int) -> None:
        entry = self._consumer_entries.get(api_address)
        if entry is not None and entry[1].get("settings_version") != version:
            entry[1]["settings_version"] = version
            await self._write_consumer(api_address)

    async def _write_consumer(self, api_address: str) -> None:
        path, doc = self._consumer_entries[api_address]
        data = json.dumps(doc).encode()
        self._owned[path] = data
        await self._call(self._ensure_owned, path, data)

    async def watch_config(self, api_address: str, listener: ConfigListener) -> None:
        path = config_path(api_address, self.root)
        await self._call(self._zk.ensure_path, f"{self.root}/{api_address}")
        loop = asyncio.get_running_loop()

        def changed(data: bytes | None, stat: Any) -> bool | None:
            # kazoo's thread: hand the bytes to the loop. A version-based watch is right here:
            # only changes matter, and kazoo reads the node again after a reconnection.
            if self._closed:
                return False
            if not loop.is_closed():
                loop.call_soon_threadsafe(listener, data or b"",
                                          stat.version if stat is not None else -1)
            return None

        await self._call(DataWatch, self._zk, path, changed)

    async def watch(self, api_address: str, listener: Listener) -> None:
        watched = self._watched.get(api_address)
        if watched is not None:
            watched.listeners.append(listener)
            listener(dict(watched.providers))
            return
        path = providers_path(api_address, self.root)
        watched = self._watched[api_address] = _Watched(path, [listener])
        await self._call(self._zk.ensure_path, path)
        # The watch's callback only says "look again"; the looking happens on the loop.
        await self._call(ChildrenWatch, self._zk, path,
                         lambda children: self._on_children(api_address), True)
        await self._refresh(api_address)

    def _on_children(self, api_address: str) -> bool | None:
        if self._closed:
            return False
        self._soon(self._refresh, api_address)
        return None

    async def _refresh(self, api_address: str) -> None:
        """Read the whole list again and tell the listeners. One refresh runs at a time per
        interface; a request that comes while one runs makes it read once more at its end."""
        watched = self._watched[api_address]
        if watched.refreshing is None:
            watched.refreshing = asyncio.get_running_loop().create_task(
                self._refresh_until_quiet(watched))
        else:
            watched.again = True
        await asyncio.shield(watched.refreshing)

    async def _refresh_until_quiet(self, watched: _Watched) -> None:
        try:
            while True:
                watched.again = False
                providers = await self._call(self._read_providers, watched.path)
                watched.providers = providers
                for listener in list(watched.listeners):
                    listener(dict(providers))
                if not watched.again:
                    return
        finally:
            watched.refreshing = None

    def _read_providers(self, path: str) -> dict[str, ProviderInfo]:
        """Every valid entry under ``path`` (kazoo thread). Reads are pipelined: all requests go
        out before the first answer is awaited."""
        children = self._zk.get_children(path)
        if len(children) > MAX_PROVIDERS:
            log.warning("%s has %d entries; reading the first %d", path, len(children),
                        MAX_PROVIDERS)
            children = sorted(children)[:MAX_PROVIDERS]
        pending = [(child, self._zk.get_async(f"{path}/{child}")) for child in children]
        providers = {}
        for child, result in pending:
            try:
                data, _ = result.get(timeout=self.connect_timeout)
            except NoNodeError:
                continue  # gone since the list was read
            try:
                info = ProviderInfo.from_json(data or b"", key=child)
            except ValueError as exc:
                log.warning("ignoring the registry entry %s/%s: %s", path, clip(child), exc)
                continue
            providers[info.key] = info
        return providers

    # -- connection state ------------------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        # kazoo's connection thread: never block, never call ZooKeeper from here (it would hang).
        self.states.append((time.monotonic(), str(state)))
        self.state_counts[str(state)] += 1
        if self._closed:
            return
        if state == KazooState.LOST:
            self._lost = True
            log.warning("ZooKeeper session expired: entries and watches will be restored")
        elif state == KazooState.SUSPENDED:
            log.info("ZooKeeper connection suspended: keeping the last known providers")
        elif state == KazooState.CONNECTED:
            self._soon(self._resync)

    async def _resync(self) -> None:
        """After a (re)connection: our entries exist and are ours, and every view is re-read."""
        if self._closed:
            return
        self._lost = False
        for path, data in list(self._owned.items()):
            try:
                await self._call(self._ensure_owned, path, data)
            except RegistryError as exc:
                log.warning("%s", exc)
        for api_address in list(self._watched):
            try:
                await self._refresh(api_address)
            except RegistryError as exc:
                log.warning("%s", exc)

    # -- plumbing --------------------------------------------------------------------------------

    def _soon(self, coroutine_function: Callable[..., Any], *args: Any) -> None:
        """From any thread: run ``coroutine_function(*args)`` as a task on the registry's loop."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._closed:
            return

        def start() -> None:
            if not self._closed:
                task = loop.create_task(coroutine_function(*args))
                task.add_done_callback(_log_failure)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop closed meanwhile
            pass

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking kazoo call off the loop, for at most ``operation_timeout`` seconds;
        its failures become RegistryError.

        While ZooKeeper is unreachable, kazoo holds a call until the connection comes back, for
        as long as that takes. So the call runs in a thread of its own, a daemon one that we
        may leave behind: a process shutting down while ZooKeeper is gone must not wait for it
        (its entries go with its session anyway).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(outcome: Callable[[], None]) -> None:
            if not future.done():
                outcome()

        def work() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the loop, raised there
                error = exc
                outcome = lambda: future.set_exception(error)  # noqa: E731
            else:
                outcome = lambda: future.set_result(result)  # noqa: E731
            try:
                loop.call_soon_threadsafe(settle, outcome)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

        threading.Thread(target=work, name="rpc-zookeeper-call", daemon=True).start()
        try:
            return await asyncio.wait_for(future, self.operation_timeout)
        except TimeoutError:
            raise RegistryUnavailable(f"ZooKeeper at {self.hosts} did not answer within "
                                      f"{self.operation_timeout:g} s") from None
        except NoAuthError:  # not unavailable: refused, and trying again changes nothing
            raise RegistryNotAllowed(f"ZooKeeper at {self.hosts} refused: the node is protected "
                                     f"with credentials this registry does not have") from None
        except (KazooException, KazooTimeoutError) as exc:
            raise RegistryUnavailable(clip(f"ZooKeeper at {self.hosts}: "
                                           f"{type(exc).__name__}: {exc}")) from None

    async def aclose(self) -> None:
        """Delete this process's entries and close the session."""
        if self._closed:
            return
        # Forget the entries first: the watch on each would otherwise put it back.
        owned, self._owned = list(self._owned), {}
        self._closed = True
        if self._zk.connected:  # if not, the session's end removes them anyway
            for path in owned:
                try:
                    await self._call(self._delete_if_ours, path)
                except RegistryError:
                    break
        try:
            await self._call(self._zk.stop)
            await self._call(self._zk.close)
        except RegistryError as exc:
            log.warning("closing the ZooKeeper session: %s", exc)


def _is_open(acl: list[ACL]) -> bool:
    """Whether anyone at all may do more than read the node (ZooKeeper's default ACL lets anyone
    do everything)."""
    return any(entry.id == ANYONE_ID_UNSAFE and entry.perms & ~Permissions.READ for entry in acl)


class _HideCredentials(logging.Filter):
    """Blanks the password in kazoo's log of the requests it sends.

    kazoo logs each request at DEBUG level, its ``Auth`` request too, and that one holds
    ``user:password`` in clear: a debug log would give the password to whoever reads the logs.
    Added to kazoo's logger by every registry with credentials (once: a logger keeps a filter
    once).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, Auth) for a in record.args):
            record.args = tuple(
                a._replace(auth=f"{a.auth.partition(':')[0]}:<hidden>") if isinstance(a, Auth)
                else a for a in record.args)
        return True


_HIDE_CREDENTIALS: Final = _HideCredentials()


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("registry task failed: %s: %s", type(exc).__name__, exc)
