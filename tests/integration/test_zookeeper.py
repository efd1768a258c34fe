"""consumers.coordination.zk_client against the real ZooKeeper of `pipeline services start`."""

from __future__ import annotations

import time

import pytest
import trio

from consumers.coordination.zk_client import (
    AclPolicy,
    ConnectionState,
    WatchKind,
    ZooKeeperClient,
    ZooKeeperConfig,
    open_zookeeper,
)
from consumers.errors import (
    BadVersion,
    ConnectionInterrupted,
    NodeExists,
    NoNode,
    NotAuthorized,
    ZooKeeperUnavailable,
)
from pipeline.services.zookeeper import ManagedZooKeeper

CONNECT_TIMEOUT_S = 10.0

pytestmark = pytest.mark.integration


async def wait_for_state(client: ZooKeeperClient, wanted: ConnectionState) -> None:
    with trio.fail_after(30):
        while client.state is not wanted:
            await client.connection_events.receive()


async def test_create_get_set_delete(zk: ZooKeeperClient) -> None:
    assert await zk.create("/a", b"one") == "/a"
    data, stat = await zk.get("/a")
    assert (data, stat.version, stat.ephemeral) == (b"one", 0, False)
    stat = await zk.set("/a", b"two", version=0)
    assert stat.version == 1
    with pytest.raises(BadVersion) as bad:
        await zk.set("/a", b"three", version=0)
    assert bad.value.path == "/a"
    with pytest.raises(NodeExists):
        await zk.create("/a")
    with pytest.raises(NoNode):
        await zk.get("/missing")
    seq = await zk.create("/q/item-", b"", sequence=True, makepath=True)
    assert seq.startswith("/q/item-") and seq[-10:].isdigit()
    assert await zk.get_children("/") == ["a", "q"]
    await zk.delete("/q", recursive=True)
    await zk.delete("/a", version=1)
    assert await zk.exists("/a") is None


async def test_chroot_isolates_paths(zk: ZooKeeperClient, zk_config: ZooKeeperConfig) -> None:
    await zk.create("/inside", b"x")
    root = ZooKeeperConfig(hosts=zk_config.hosts, connect_timeout_s=CONNECT_TIMEOUT_S)
    async with open_zookeeper(root) as admin:
        data, _ = await admin.get(f"{zk_config.chroot}/inside")
    assert data == b"x"


async def test_watches_fire_on_change_children_and_delete(zk: ZooKeeperClient) -> None:
    await zk.create("/w", b"0")
    _, _, data_watch = await zk.get_watched("/w")
    children, child_watch = await zk.get_children_watched("/w")
    assert children == []
    await zk.set("/w", b"1")
    with trio.fail_after(10):
        event = await data_watch.wait()
    assert (event.kind, event.path) == (WatchKind.CHANGED, "/w")
    await zk.create("/w/c")
    with trio.fail_after(10):
        assert (await child_watch.wait()).kind is WatchKind.CHILDREN
    stat, gone = await zk.exists_watched("/w/c")
    assert stat is not None
    await zk.delete("/w/c")
    with trio.fail_after(10):
        assert (await gone.wait()).kind is WatchKind.DELETED
    missing, born = await zk.exists_watched("/later")
    assert missing is None
    await zk.create("/later")
    with trio.fail_after(10):
        assert (await born.wait()).kind is WatchKind.CREATED


async def test_ephemeral_node_vanishes_when_session_expires(
    zk: ZooKeeperClient, zk_config: ZooKeeperConfig
) -> None:
    async with open_zookeeper(zk_config) as owner:
        await owner.create("/member", b"me", ephemeral=True)
        stat, watch = await zk.exists_watched("/member")
        assert stat is not None and stat.ephemeral_owner == owner.session_id
        old_session = owner.session_id

        await owner.expire_session()

        with trio.fail_after(30):
            assert (await watch.wait()).kind is WatchKind.DELETED
            states: list[ConnectionState] = []
            while ConnectionState.CONNECTED not in states[1:] or ConnectionState.LOST not in states:
                states.append((await owner.connection_events.receive()).state)
        assert states.index(ConnectionState.LOST) < len(states) - 1
        # kazoo opened a new session: the client works again, the ephemeral is gone for good.
        assert owner.session_id != old_session
        assert await owner.exists("/member") is None
        await owner.create("/member", b"again", ephemeral=True)
    assert await zk.exists("/member") is None  # closing the session removes it at once


async def test_digest_auth_and_creator_acl(zk_config: ZooKeeperConfig, zk: ZooKeeperClient) -> None:
    secured = ZooKeeperConfig(
        hosts=zk_config.hosts,
        chroot=zk_config.chroot,
        auth_digest="alice:secret",
        acl=AclPolicy.CREATOR,
        connect_timeout_s=CONNECT_TIMEOUT_S,
    )
    async with open_zookeeper(secured) as alice:
        await alice.create("/private", b"for alice")
        assert (await alice.get("/private"))[0] == b"for alice"
    with pytest.raises(NotAuthorized) as denied:
        await zk.get("/private")
    assert denied.value.path == "/private"
    other = ZooKeeperConfig(
        hosts=zk_config.hosts,
        chroot=zk_config.chroot,
        auth_digest="mallory:guess",
        connect_timeout_s=CONNECT_TIMEOUT_S,
    )
    async with open_zookeeper(other) as mallory:
        with pytest.raises(NotAuthorized):
            await mallory.set("/private", b"mine")
    async with open_zookeeper(secured) as alice:
        await alice.delete("/private")


async def test_reconnects_after_zookeeper_restart(
    zk_config: ZooKeeperConfig, zk_server: ManagedZooKeeper
) -> None:
    server = zk_server
    if server.managed_pid() is None or server.address != zk_config.hosts:
        pytest.skip("needs the ZooKeeper that `pipeline services start` started here")
    config = ZooKeeperConfig(
        hosts=zk_config.hosts,
        chroot=zk_config.chroot,
        session_timeout_s=20.0,  # outlives the restart: the session resumes
        connect_timeout_s=CONNECT_TIMEOUT_S,
        request_timeout_s=2.0,
    )
    async with open_zookeeper(config) as client:
        await client.create("/kept", b"persistent")
        session = client.session_id
        try:
            await trio.to_thread.run_sync(server.stop, lambda _msg: None)
            await wait_for_state(client, ConnectionState.SUSPENDED)
            began = time.monotonic()
            with pytest.raises(ConnectionInterrupted):
                await client.get("/kept")
            assert time.monotonic() - began < 10  # bounded by request_timeout_s, no hang
        finally:
            await trio.to_thread.run_sync(server.start, lambda _msg: None, 60.0)
        await wait_for_state(client, ConnectionState.CONNECTED)
        assert (await client.get("/kept"))[0] == b"persistent"
        assert client.session_id == session
        await client.delete("/kept")


async def test_closed_port_is_unavailable_within_timeout(closed_port: int) -> None:
    config = ZooKeeperConfig(hosts=f"127.0.0.1:{closed_port}", connect_timeout_s=2.0)
    began = time.monotonic()
    with pytest.raises(ZooKeeperUnavailable) as err:
        async with open_zookeeper(config):
            pass
    assert time.monotonic() - began < 2.0 + 3.0
    assert f"127.0.0.1:{closed_port}" in str(err.value)


async def test_silent_server_is_unavailable_within_timeout(silent_listener: int) -> None:
    config = ZooKeeperConfig(hosts=f"127.0.0.1:{silent_listener}", connect_timeout_s=2.0)
    began = time.monotonic()
    with pytest.raises(ZooKeeperUnavailable) as err:
        async with open_zookeeper(config):
            pass
    assert time.monotonic() - began < 2.0 + 3.0
    assert f"127.0.0.1:{silent_listener}" in str(err.value)
