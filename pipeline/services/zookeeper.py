"""The local ZooKeeper: a standalone server from Maven Central's jars.

Configuration: conf/services/zoo.cfg (a template, rendered to var/zookeeper/zoo.cfg),
conf/services/zookeeper-jvm.options, conf/services/logback.xml.  Ready means a session opens.
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

    def __init__(self, config: ServicesConfig) -> None:
        super().__init__(
            config.var_dir, config.cache_dir, config.zookeeper.host, config.zookeeper.port
        )
        self.settings: ZooKeeperServiceConfig = config.zookeeper
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
        self.config_file.write_text(
            template.substitute(
                data_dir=str(self.home), host=self.settings.host, port=self.settings.port
            )
        )
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

    def main_args(self) -> list[str]:
        return [str(self.config_file)]

    def probe(self, timeout_s: float) -> None:
        try:
            probe_zookeeper(ZooKeeperConfig(hosts=self.address, connect_timeout_s=timeout_s))
        except ConsumersError as exc:
            raise ServiceError(self.name, str(exc)) from exc
