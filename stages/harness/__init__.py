"""The lab bench shared by every stage, notebook and test: not a lesson.

* :mod:`~stages.harness.zookeeper`: a real local ZooKeeper (our embedded default);
* :mod:`~stages.harness.bench` and :mod:`~stages.harness.plots`: latency/TPS measurement and plots;
* :mod:`~stages.harness.process`: a stage's server as a child process;
* :mod:`~stages.harness.threads`: an in-process server on its own loop thread;
* :mod:`~stages.harness.faultproxy`: a TCP proxy that delays, black-holes, cuts or resets links;
* :mod:`~stages.harness.peers`: gRPC (``grpc.aio``) and a bare asyncio echo, to benchmark against;
* :mod:`~stages.harness.ports`: free ports on 127.0.0.1.
"""
