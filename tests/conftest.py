"""Fixtures shared by every test: a real ZooKeeper for the session, a chroot per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stages.harness.zookeeper import resolve_zookeeper, temporary_chroot


@pytest.fixture(scope="session")
def zookeeper() -> Iterator[str]:
    """Connect string of the session's ZooKeeper, ``"127.0.0.1:PORT"``.

    ``$RPC_ZK`` if set (nothing is started), else a LocalZooKeeper that lives for the whole
    session. Without Java or the ``zookeeper`` package this errors with install hints; it is
    never skipped.
    """
    with resolve_zookeeper() as hosts:
        yield hosts


@pytest.fixture
def zk_chroot(zookeeper: str) -> Iterator[str]:
    """A connect string rooted at a fresh node, ``"127.0.0.1:PORT/test-<uuid>"``.

    Tests sharing the session's server cannot see each other's nodes; the node and its
    subtree are deleted after the test.
    """
    with temporary_chroot(zookeeper) as hosts:
        yield hosts
