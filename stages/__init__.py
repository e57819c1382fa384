"""rpc-walkthrough: an RPC framework built one version at a time.

Each version is a package of its own that imports the one before it and changes only what its
version teaches:

========  ==============  ==================================================================
version   package         what it teaches
========  ==============  ==================================================================
1.0       ``stages.v1_0``  length-prefixed frames over a raw asyncio socket
2.0       ``stages.v2_0``  interfaces, dynamic proxies, protobuf and allow-list pickle
2.1       ``stages.v2_1``  long-lived multiplexed connections, heartbeats, graceful shutdown
========  ==============  ==================================================================

``stages.harness`` is the lab bench shared by every version (a local ZooKeeper, measurement,
plots, processes); it is not a lesson.
"""
