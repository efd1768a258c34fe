"""A log server's entry in the journal registry (``consumers.coordination.registry``).

With ``[coordination] kind = "zookeeper"`` and a fetch port, the server registers its journal's
identity, the fetch service's address and its partitions, so that groups reading the registry
(``journals = "registry"``) find it.  ZooKeeper unreachable never keeps the server from
starting or acknowledging: the registrar retries in the background.
"""

from __future__ import annotations

import logging
import socket

import trio

from journal import Journal
from pipeline.config import PipelineConfig
from pipeline.consumer_config import CoordinationKind
from scribe_compat import FetchServer

log = logging.getLogger(__name__)


def advertised_host(listen_host: str) -> str:
    """The host consumers should connect to: a wildcard listen address says nothing about
    where the server is, so it is replaced by the host's name."""
    if listen_host in ("", "0.0.0.0", "::"):
        return socket.getfqdn()
    return listen_host


async def start_registration(
    nursery: trio.Nursery, config: PipelineConfig, journal: Journal, fetch_server: FetchServer
) -> None:
    """Keep ``journal`` registered while ``nursery`` runs (ZooKeeper coordination only)."""
    if config.coordination.kind is not CoordinationKind.ZOOKEEPER:
        return
    # Imported here: a server that never uses ZooKeeper never loads kazoo.
    from consumers.coordination.registry import JournalRegistrar

    host, port = fetch_server.address
    registrar = JournalRegistrar(
        config.coordination.zookeeper,
        journal.journal_id.hex,
        (advertised_host(host), port),
        journal.partitions,
        interval_s=config.coordination.registry_interval_s,
        retry_interval_s=config.coordination.registry_interval_s,
    )
    await nursery.start(registrar.run)
    log.info("journal registry", extra={"journal_id": journal.journal_id.hex})
