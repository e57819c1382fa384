"""rpc-walkthrough: an RPC framework built one version at a time.

Each version is a package of its own that imports the one before it and changes only what its
version teaches:

========  ==============  ==================================================================
version   package         what it teaches
========  ==============  ==================================================================
1.0       ``stages.v1_0``  length-prefixed frames over a raw asyncio socket
2.0       ``stages.v2_0``  interfaces, dynamic proxies, protobuf and allow-list pickle
2.1       ``stages.v2_1``  long-lived multiplexed connections, heartbeats, graceful shutdown
3.0, 3.1  ``stages.v3_x``  registration and discovery on ZooKeeper; client-side load balancing
========  ==============  ==================================================================

``stages.harness`` is the lab bench shared by every version (a local ZooKeeper, measurement,
plots, processes); it is not a lesson.
"""


def stage_order(name: str) -> tuple[int, ...]:
    """Sort key of a stage package name: ``v1_0`` < ``v2_0`` < ``v2_1`` < ``v3_x``.

    Each part after the ``v`` is a number, and a letter (``x``: the versions of one package)
    sorts after every number, so a ``v3_x`` package comes after ``v3_0`` would, and after v2.
    """
    return tuple(int(part) if part.isdigit() else 1_000 for part in name[1:].split("_"))
