"""The local Cassandra: `cassandra-all` and its dependencies from Maven Central on Java 17.

Maven Central has no Cassandra tarball for 4.x and later, so no bin/ or conf/: we run
`org.apache.cassandra.service.CassandraDaemon` ourselves with conf/services/cassandra.yaml (a
template, rendered to var/cassandra/cassandra.yaml), conf/services/logback.xml and the flags of
conf/services/cassandra-jvm17.options.  Ready means CQL answers.

A cluster's node n lives in var/cassandra-n/ on its own loopback address; every node is a seed
and owns one evenly spaced token (conf/services/cassandra-cluster.yaml), so all nodes start at
once and none bootstraps (streaming from its peers) before it serves.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from consumers.cassandra import CassandraConfig, probe_cassandra
from consumers.errors import CassandraAuthFailed, ConsumersError
from pipeline.services.config import CassandraServiceConfig, ServicesConfig
from pipeline.services.fetch import Artifact, ensure_lib
from pipeline.services.process import (
    CONF_DIR,
    JavaInfo,
    ManagedService,
    Progress,
    ServiceError,
    find_java,
)

__all__ = ["ManagedCassandra"]


class ManagedCassandra(ManagedService):
    name = "cassandra"
    main_class = "org.apache.cassandra.service.CassandraDaemon"

    def __init__(self, config: ServicesConfig, member: int = 1) -> None:
        settings = config.cassandra
        if member not in settings.members:
            raise ValueError(f"member {member}: the cluster has nodes 1 to {settings.nodes}")
        super().__init__(
            config.var_dir,
            config.cache_dir,
            settings.node_host(member),
            settings.port,
            f"{self.name}-{member}" if settings.nodes > 1 else None,
        )
        self.settings: CassandraServiceConfig = settings
        self.member = member
        self.config_file = self.home / "cassandra.yaml"
        self._lib: Path | None = None

    def artifact(self) -> Artifact:
        version = self.settings.version
        return Artifact(
            "cassandra",
            CONF_DIR / "cassandra-pom.xml",
            "cassandra.version",
            version,
            f"cassandra-all-{version}.jar",
        )

    def java(self) -> JavaInfo:
        # The flags in cassandra-jvm17.options are Java 17's; Cassandra 5.0 runs on 11 or 17.
        return find_java(self.name, minimum=17, maximum=17)

    def fetch(self, progress: Progress) -> Path:
        self._lib = ensure_lib(
            self.artifact(), self.cache_dir, self.log_dir / "fetch.log", progress
        )
        return self._lib

    def extra_ports(self) -> list[int]:
        return [self.settings.storage_port]

    def prepare(self) -> list[str]:
        assert self._lib is not None, "fetch() comes first"
        for sub in ("data", "commitlog", "saved_caches", "hints", "cdc_raw", "logs"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        s = self.settings
        authorizer = (
            "CassandraAuthorizer"
            if s.authenticator == "PasswordAuthenticator"
            else "AllowAllAuthorizer"
        )
        template = Template((CONF_DIR / "cassandra.yaml").read_text())
        text = template.substitute(
            cluster_name=s.cluster_name,
            host=self.host,
            port=s.port,
            storage_port=s.storage_port,
            seeds=",".join(f"{host}:{s.storage_port}" for host in s.hosts),
            data_dir=str(self.home),
            authenticator=s.authenticator,
            authorizer=authorizer,
        )
        if s.nodes > 1:
            cluster = Template((CONF_DIR / "cassandra-cluster.yaml").read_text())
            text += "\n" + cluster.substitute(initial_token=self.initial_token())
        self.config_file.write_text(text)
        jamm = sorted(self._lib.glob("jamm-*.jar"))
        heap = f"{s.heap_mb}m"
        return [
            *self.read_options(CONF_DIR / "cassandra-jvm17.options"),
            f"-Xms{heap}",
            f"-Xmx{heap}",
            f"-XX:HeapDumpPath={self.log_dir}",
            f"-XX:ErrorFile={self.log_dir}/hs_err_%p.log",
            # jamm measures object sizes (memtable accounting) as a Java agent.
            *([f"-javaagent:{jamm[-1].resolve()}"] if jamm else []),
            f"-Dcassandra.config={self.config_file.as_uri()}",
            f"-Dlogback.configurationFile={(CONF_DIR / 'logback.xml').as_uri()}",
            f"-Dpipeline.log.file={self.log_dir / 'cassandra.log'}",
            f"-Dcassandra.logdir={self.log_dir}",
            f"-Dcassandra.storagedir={self.home}",
            # A single node: no gossip to settle, no ring to wait for, no peers to agree with.
            # A local cluster neither: every node is a seed with its own fixed token, so none
            # bootstraps (the ring delay guards a bootstrap's token choice and streaming), and
            # peers that come up later are gossiped in while the node already serves.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            f"-Dcassandra.ring_delay_ms={s.ring_delay_ms}",
            f"-Dcassandra.superuser_setup_delay_ms={s.superuser_setup_delay_ms}",
        ]

    def initial_token(self) -> int:
        """This node's token: the Murmur3 ring (-2**63 .. 2**63 - 1) cut into equal shares."""
        share = 2**64 // self.settings.nodes
        return -(2**63) + (self.member - 1) * share

    def probe(self, timeout_s: float) -> None:
        config = CassandraConfig(
            hosts=(self.host,),
            port=self.settings.port,
            connect_timeout_s=timeout_s,
            request_timeout_s=timeout_s,
        )
        try:
            probe_cassandra(config)
        except CassandraAuthFailed:
            return  # it answers CQL; it wants a login
        except ConsumersError as exc:
            raise ServiceError(self.name, str(exc)) from exc
