"""Who may call (v3.3): TLS on every connection, and a token that only the registry hands out.

Two questions, two answers, as in Dubbo and gRPC:

**Is this really my provider, and may anyone listen in?** *TLS*. The provider shows a
certificate signed by a certificate authority (CA) the consumer trusts; everything after the
handshake is encrypted. With *mutual TLS* the provider also asks the consumer for a certificate
from its CA, and a client without one never gets past the handshake: nothing it sends is read.
:class:`TlsConfig` builds both sides' ``ssl.SSLContext`` from PEM files
(``--tls-cert/--tls-key/--tls-ca``). A provider registers under the address its certificate
names (``127.0.0.1`` here), and the consumer checks that name, as a browser does.

**Did this caller come through the registry?** A *token* (Dubbo's ``token``). A provider
started with a token writes it into its registry entry; consumers read it there, with the rest of
the entry, and send it as the first frame on each new connection (an ``AUTH`` frame, type 8).
Until a connection has shown the right token, every request on it is answered
``UNAUTHENTICATED`` before its body is decoded: a client that bypasses the registry and dials the
provider directly cannot make it run anything, or even unpickle anything. The token is only as
secret as the registry is readable; protect the registry too (ZooKeeper ACLs, see
:mod:`stages.v3_x.registry`), and use TLS so that the token does not cross the network in clear.

Both are per connection, not per call: once the handshake and the token are through, a call costs
what it cost before.
"""

from __future__ import annotations

import hmac
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from stages.v1_0.protocol import Frame
from stages.v3_x.errors import ConfigError

__all__ = ["AUTH", "TlsConfig", "new_token", "hello", "token_matches"]

#: The frame type of a token: the first frame a consumer sends on a connection.
AUTH: Final = 8


def new_token() -> str:
    """A fresh random token (192 bits, in letters, digits, ``-`` and ``_``)."""
    return secrets.token_urlsafe(24)


def hello(token: str) -> Frame:
    """The AUTH frame carrying ``token``."""
    return Frame(AUTH, 0, token.encode("ascii"))


def token_matches(expected: str, frame: Frame) -> bool:
    """Whether an AUTH frame carries ``expected`` (compared in constant time, so that how long a
    refusal takes says nothing about how much of a guess was right)."""
    return hmac.compare_digest(expected.encode("ascii"), frame.body)


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """Certificates and keys for TLS, as PEM files.

    Attributes:
        cert, key: this side's certificate (chain) and private key. A provider needs them; a
            consumer needs them only for mutual TLS.
        ca: the CA certificate that signed the *other* side's certificate. A consumer checks the
            provider against it (default: the system's CAs); a provider with ``mutual`` checks
            its consumers against it.
        mutual: provider only: refuse clients that show no certificate signed by ``ca``.
    """

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    mutual: bool = False

    def __post_init__(self) -> None:
        for name in ("cert", "key", "ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"tls {name}: no file {path!r}")
        if (self.cert is None) != (self.key is None):
            raise ConfigError("tls: give the certificate and its key together")
        if self.mutual and self.ca is None:
            raise ConfigError("tls: mutual TLS needs the CA that signs the consumers (ca)")

    def server_context(self) -> ssl.SSLContext:
        """The provider's side."""
        if self.cert is None or self.key is None:
            raise ConfigError("tls: a provider needs its certificate and key")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        if self.mutual:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca)
        return context

    def client_context(self) -> ssl.SSLContext:
        """The consumer's side: the provider's certificate and name are checked."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None and self.key is not None:
            context.load_cert_chain(self.cert, self.key)
        return context
