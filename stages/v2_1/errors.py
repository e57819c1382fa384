"""The exception tree of v2.1: v2.0's, unchanged.

Long-lived connections need no new kind of error, only new causes for the existing ones: a
connection found dead by the heartbeat, or closed after a GOAWAY, fails its calls with
:class:`ConnectionClosedError`; a call past its deadline raises :class:`RpcTimeoutError`; a
server that cannot be reached (or is being backed off from) is a :class:`TransportError`.
"""

from stages.v2_0.errors import *  # noqa: F403  (unchanged since v2.0)
from stages.v2_0.errors import __all__ as __all__  # noqa: F401
