"""The local ZooKeeper: a standalone server, or one member of an ensemble, from Maven
Central's jars.

Configuration: conf/services/zoo.cfg (a template, rendered to var/zookeeper/zoo.cfg),
conf/services/zookeeper-jvm.options, conf/services/logback.xml; an ensemble's member n adds
conf/services/zoo-ensemble.cfg and its myid, in var/zookeeper-n/.  Ready means a session opens
on the server itself (a member outside a quorum refuses sessions).
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from consumers.coordination.zk_client import ZooKeeperConfig, probe_zookeeper
from consumers.errors import ConsumersError
from pipeline.services.config import ServicesConfig, ZooKeeperServiceConfig
from pipeline.services.fetch import Artifact, ensure_lib
from pipeline.services.process import (
    CONF_DIR,
    JavaInfo,
    ManagedService,
    Progress,
    ServiceError,
    find_java,
)

__all__ = ["ManagedZooKeeper"]


class ManagedZooKeeper(ManagedService):
    name = "zookeeper"
    main_class = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

    def __init__(self, config: ServicesConfig, member: int = 1) -> None:
        settings = config.zookeeper
        if member not in settings.members:
            raise ValueError(f"member {member}: the ensemble has servers 1 to {settings.servers}")
        ensemble = settings.servers > 1
        super().__init__(
            config.var_dir,
            config.cache_dir,
            settings.host,
            settings.client_port(member),
            f"{self.name}-{member}" if ensemble else None,
        )
        self.settings: ZooKeeperServiceConfig = settings
        self.member = member
        self.config_file = self.home / "zoo.cfg"

    def artifact(self) -> Artifact:
        version = self.settings.version
        return Artifact(
            "zookeeper",
            CONF_DIR / "zookeeper-pom.xml",
            "zookeeper.version",
            version,
            f"zookeeper-{version}.jar",
        )

    def java(self) -> JavaInfo:
        return find_java(self.name, minimum=11)

    def fetch(self, progress: Progress) -> Path:
        return ensure_lib(self.artifact(), self.cache_dir, self.log_dir / "fetch.log", progress)

    def prepare(self) -> list[str]:
        for sub in ("data", "datalog", "logs"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        template = Template((CONF_DIR / "zoo.cfg").read_text())
        text = template.substitute(data_dir=str(self.home), host=self.settings.host, port=self.port)
        if self.settings.servers > 1:
            text += self._ensemble_settings()
            (self.home / "data" / "myid").write_text(f"{self.member}\n")
        self.config_file.write_text(text)
        heap = f"{self.settings.heap_mb}m"
        return [
            *self.read_options(CONF_DIR / "zookeeper-jvm.options"),
            f"-Xms{heap}",
            f"-Xmx{heap}",
            f"-XX:ErrorFile={self.log_dir}/hs_err_%p.log",
            f"-Dlogback.configurationFile={(CONF_DIR / 'logback.xml').as_uri()}",
            f"-Dpipeline.log.file={self.log_dir / 'zookeeper.log'}",
            f"-Dzookeeper.log.dir={self.log_dir}",
        ]

    def _ensemble_settings(self) -> str:
        s = self.settings
        servers = "\n".join(
            f"server.{n}={s.host}:{s.quorum_port + n - 1}:{s.election_port + n - 1}"
            for n in s.members
        )
        template = Template((CONF_DIR / "zoo-ensemble.cfg").read_text())
        return "\n" + template.substitute(servers=servers)

    def extra_ports(self) -> list[int]:
        if self.settings.servers == 1:
            return []
        offset = self.member - 1
        return [self.settings.quorum_port + offset, self.settings.election_port + offset]

    def main_args(self) -> list[str]:
        return [str(self.config_file)]

    def probe(self, timeout_s: float) -> None:
        try:
            probe_zookeeper(ZooKeeperConfig(hosts=self.address, connect_timeout_s=timeout_s))
        except ConsumersError as exc:
            raise ServiceError(self.name, str(exc)) from exc
